"""Input checks for dataset conversion.

Every check here *reports* instead of raising, so that a converter can run all of them over the whole
cohort and show the user every problem at once (one line each, naming the file) before anything is
written. `ProblemList.raise_if_any` turns the collected lines into one `MfnsInputError`.

Images are read through `nnunetv2_mfns.image_checks.read_checked` (the one checked reader of the project),
which returns SimpleITK images: they keep the full geometry (spacing, origin, direction) that the
image/mask comparison and the nnU-Net writer need.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.image_checks import Expect, ImageCheckError, read_checked

# Geometry tolerances (spacing/origin: relative OR absolute; direction: absolute per matrix element).
# Headers written by different tools round differently (float32 vs float64 qform/sform), so exact
# equality would reject pairs that nnU-Net itself treats as identical.
SPACING_REL_TOL = 1e-4
SPACING_ABS_TOL_MM = 1e-3
ORIGIN_REL_TOL = 1e-4
ORIGIN_ABS_TOL_MM = 1e-3
DIRECTION_ABS_TOL = 1e-4

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class ProblemList:
    """Collects `<file>: <problem>` lines; raise them together once all checks ran."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str | Path, problem: str) -> None:
        self.lines.append(f"{where}: {problem}")

    def extend(self, other: "ProblemList") -> None:
        self.lines.extend(other.lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __bool__(self) -> bool:
        return bool(self.lines)

    def raise_if_any(self, what: str = "input") -> None:
        """Raise one MfnsInputError listing every problem, one per line (nothing has been written)."""
        if self.lines:
            n = len(self.lines)
            header = f"{n} problem{'s' if n != 1 else ''} found in the {what}; nothing was written:"
            raise MfnsInputError("\n".join([header] + ["  " + line for line in self.lines]))


def is_nifti(path: str | Path) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_int_list(text: str, parameter: str) -> list[int]:
    """Parse '1,2' into [1, 2]; raise MfnsInputError naming the parameter otherwise."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip() != ""]
    except ValueError:
        raise MfnsInputError(f"{parameter}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise MfnsInputError(f"{parameter}: expected at least one integer, got {text!r}")
    if 0 in values:
        raise MfnsInputError(f"{parameter}: 0 is background and cannot be a PVS value")
    return sorted(set(values))


@dataclass
class LoadedImage:
    """A 3D image ready for checks/writing plus what was learnt while loading it."""

    path: Path
    image: sitk.Image
    array: np.ndarray  # numpy order (z, y, x), i.e. sitk.GetArrayViewFromImage order

    @property
    def shape_xyz(self) -> tuple[int, ...]:
        return tuple(self.image.GetSize())


def load_3d_image(path: Path, role: str, problems: ProblemList, volume_index: int | None = None,
                  expect: Expect = "image") -> LoadedImage | None:
    """Read a NIfTI through the project's one checked reader (`nnunetv2_mfns.image_checks.read_checked`:
    complete gzip stream, sane header and affine, finite values, `expect`: "image" not constant, "label"
    integer values) and reduce it to 3D; report (not raise) the problem.

    4D input is refused unless `volume_index` is given, because silently picking a volume of a
    multi-echo or multi-run file would train on the wrong contrast.
    """
    try:
        checked = read_checked(path, role, expect, volume_index=volume_index,
                               volume_hint="pass --volume-index to select one")
    except ImageCheckError as e:
        problems.add(e.path, e.problem)
        return None
    return LoadedImage(path=checked.path, image=checked.image, array=checked.array)


def _close(a: Sequence[float], b: Sequence[float], rel: float, abs_mm: float) -> bool:
    # A value passes if it is within the relative OR the absolute tolerance.
    return all(math.isclose(x, y, rel_tol=rel, abs_tol=abs_mm) for x, y in zip(a, b))


def geometry_mismatches(image: sitk.Image, mask: sitk.Image) -> list[str]:
    """Differences in shape, spacing, origin, direction between two images (empty list = compatible)."""
    out: list[str] = []
    if image.GetSize() != mask.GetSize():
        out.append(f"shape {mask.GetSize()} != image shape {image.GetSize()}")
        # The other fields may still differ; report them too so the user fixes everything at once.
    if not _close(image.GetSpacing(), mask.GetSpacing(), SPACING_REL_TOL, SPACING_ABS_TOL_MM):
        out.append(f"spacing {_fmt(mask.GetSpacing())} != image spacing {_fmt(image.GetSpacing())}")
    if not _close(image.GetOrigin(), mask.GetOrigin(), ORIGIN_REL_TOL, ORIGIN_ABS_TOL_MM):
        out.append(f"origin {_fmt(mask.GetOrigin())} != image origin {_fmt(image.GetOrigin())}")
    if not np.allclose(image.GetDirection(), mask.GetDirection(), rtol=0.0, atol=DIRECTION_ABS_TOL):
        out.append(f"direction {_fmt(mask.GetDirection())} != image direction {_fmt(image.GetDirection())}")
    return out


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def mask_value_problems(array: np.ndarray, pvs_values: Sequence[int] | None) -> list[str]:
    """What is wrong with a mask's values, given the declared PVS values (None = must be binary 0/1)."""
    out: list[str] = []
    if np.issubdtype(array.dtype, np.floating):
        finite = array[np.isfinite(array)]
        if finite.size and not np.all(finite == np.round(finite)):
            out.append("mask has non-integer values; a label mask with integer values is required")
            return out
        values = np.unique(finite).astype(np.int64)
    else:
        values = np.unique(array).astype(np.int64)
    allowed = {0} | (set(pvs_values) if pvs_values else {1})
    unexpected = [int(v) for v in values if int(v) not in allowed]
    if unexpected:
        shown = ", ".join(str(v) for v in unexpected[:10]) + (", ..." if len(unexpected) > 10 else "")
        if pvs_values:
            out.append(f"mask has values {shown} that are neither 0 nor declared PVS values "
                       f"{','.join(map(str, sorted(pvs_values)))} (--pvs-values)")
        else:
            out.append(f"mask is not binary (found values {shown} besides 0/1); "
                       f"pass --pvs-values to say which values are PVS")
    return out


def binarise_mask(array: np.ndarray, pvs_values: Sequence[int] | None) -> np.ndarray:
    """uint8 0/1 label array; only call after `mask_value_problems` returned nothing."""
    values = list(pvs_values) if pvs_values else [1]
    return np.isin(array, values).astype(np.uint8)


def _present_text(value: object) -> str | None:
    """The stripped text of a table cell, or None when the cell means 'missing' (empty, n/a, NaN, None)."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text == "" or text.lower() in {"n/a", "na", "nan", "none"} else text


def parse_age(value: object) -> float | None:
    """Numeric age or None for missing/non-numeric/non-finite values (the caller reports which)."""
    text = _present_text(value)
    if text is None:
        return None
    try:
        age = float(text)
    except ValueError:
        return None
    return age if math.isfinite(age) and age >= 0 else None


_SEX_MAP = {"f": "F", "female": "F", "w": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}


def normalise_sex(value: object) -> str | None:
    """'F'/'M' for the usual spellings, None when missing, otherwise the value as given (e.g. 'O')."""
    text = _present_text(value)
    return None if text is None else _SEX_MAP.get(text.lower(), text)
