"""Reading and checking the inputs of the evaluation: label/prediction folders, subjects.json, mfns_splits.json.

Every problem with user input is raised as `MfnsInputError` with a one-line message that names the file.
Images are read with SimpleITK, so arrays are (z, y, x) = numpy axis 0 is the axial slice axis
(ITK index axis 2), matching docs/interfaces.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_mfns.errors import MfnsInputError, read_json_file

FILE_ENDING = ".nii.gz"
SUBJECTS_SCHEMA = "nnunetv2_mfns.subjects/1"
# geometry tolerance: nnU-Net writes predictions with the geometry copied from the input, so anything beyond
# float rounding of a header is a genuine mismatch (a resampled or foreign file)
GEOMETRY_ATOL = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of an image in ITK terms (size x, y, z; spacing x, y, z in mm)."""
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        """Spacing in numpy (sitk array) axis order."""
        return tuple(self.spacing[::-1])


def geometry_of(img: sitk.Image) -> Geometry:
    return Geometry(tuple(img.GetSize()), tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))


def same_geometry(a: Geometry, b: Geometry, atol: float = GEOMETRY_ATOL) -> bool:
    return (a.size == b.size and np.allclose(a.spacing, b.spacing, atol=atol)
            and np.allclose(a.origin, b.origin, atol=max(atol, 1e-3))
            and np.allclose(a.direction, b.direction, atol=atol))


def describe_geometry_difference(a: Geometry, b: Geometry) -> str:
    for name in ("size", "spacing", "origin", "direction"):
        va, vb = getattr(a, name), getattr(b, name)
        if name == "size":
            if va != vb:
                return f"size {va} != {vb}"
        elif not np.allclose(va, vb, atol=max(GEOMETRY_ATOL, 1e-3) if name == "origin" else GEOMETRY_ATOL):
            return f"{name} {tuple(round(v, 4) for v in va)} != {tuple(round(v, 4) for v in vb)}"
    return "identical"


def read_image(path: Path) -> tuple[np.ndarray, Geometry]:
    """Array (numpy axis order z, y, x) and geometry of a NIfTI file."""
    path = Path(path)
    if not path.is_file():
        raise MfnsInputError(f"{path}: file not found")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise MfnsInputError(f"{path}: cannot be read as an image ({str(e).strip().splitlines()[-1][:120]})") from None
    return sitk.GetArrayViewFromImage(img).copy(), geometry_of(img)


def read_binary_mask(path: Path, role: str = "prediction") -> tuple[np.ndarray, Geometry]:
    """Reads a segmentation that must contain only 0 and 1; returns a bool array and its geometry."""
    arr, geom = read_image(path)
    if arr.ndim != 3:
        raise MfnsInputError(f"{path}: {role} must be a 3D image, got {arr.ndim}D")
    if arr.dtype != np.uint8 and arr.dtype != bool:
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise MfnsInputError(f"{path}: {role} contains NaN/inf values, expected labels 0/1")
    # max/min first: cheap and catches almost every bad file without a full unique() pass
    mx, mn = arr.max(initial=0), arr.min(initial=0)
    if mn < 0 or mx > 1 or (np.issubdtype(arr.dtype, np.floating) and np.any((arr != 0) & (arr != 1))):
        bad = np.unique(arr[(arr != 0) & (arr != 1)])[:5]
        raise MfnsInputError(f"{path}: {role} has values other than 0/1 (e.g. {', '.join(str(v) for v in bad)}); "
                             f"only binary PVS masks are accepted")
    return arr.astype(bool, copy=False), geom


def read_region_mask(path: Path, role: str = "region mask") -> tuple[np.ndarray, Geometry]:
    """Region masks: any non-negative integer image, inside = non-zero (writers may use 1 or 255)."""
    arr, geom = read_image(path)
    if arr.ndim != 3 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool) or arr.min(initial=0) < 0:
        raise MfnsInputError(f"{path}: {role} must be a 3D non-negative integer mask")
    return arr > 0, geom


def list_cases(folder: Path, role: str) -> list[str]:
    """Case identifiers (file name without `.nii.gz`) of a label or prediction folder, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MfnsInputError(f"{folder}: {role} folder not found")
    cases = sorted(f[:-len(FILE_ENDING)] for f in os.listdir(folder) if f.endswith(FILE_ENDING))
    if not cases:
        raise MfnsInputError(f"{folder}: {role} folder contains no {FILE_ENDING} files")
    return cases


def load_subjects(path: Path) -> dict:
    """Reads subjects.json (schema nnunetv2_mfns.subjects/1) and checks the parts the evaluation uses."""
    path = Path(path)
    data = read_json_file(path, "no subjects file there")
    if not isinstance(data, dict) or data.get("schema") != SUBJECTS_SCHEMA or not isinstance(data.get("subjects"), dict):
        raise MfnsInputError(f"{path}: not a subjects file with schema {SUBJECTS_SCHEMA!r} and a 'subjects' object")
    for case, s in data["subjects"].items():
        if not isinstance(s, dict):
            raise MfnsInputError(f"{path}: subjects[{case!r}] must be an object")
        rs = s.get("rating_slices")
        if rs is not None:
            if not isinstance(rs, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in rs.values()):
                raise MfnsInputError(f"{path}: subjects[{case!r}].rating_slices must map region names to integer slice indices")
        rc = s.get("rater_counts")
        if rc is not None:
            if not isinstance(rc, dict) or not all(isinstance(v, dict) for v in rc.values()):
                raise MfnsInputError(f"{path}: subjects[{case!r}].rater_counts must map rater names to {{region: count}}")
    return data


def load_splits_file(path: Path) -> dict:
    """Reads mfns_splits.json (written by nnunetv2_mfns.dataset_conversion.splits.write_splits)."""
    path = Path(path)
    data = read_json_file(path, "no splits file there")
    if not isinstance(data, dict) or not isinstance(data.get("folds"), list):
        raise MfnsInputError(f"{path}: not an mfns_splits.json file (no 'folds' list)")
    return data


def case_to_fold_from_splits(splits: dict, source: str = "splits") -> dict[str, int]:
    """Maps every test case to the fold in which it was tested (each case is tested exactly once)."""
    mapping: dict[str, int] = {}
    for f in splits["folds"]:
        for case in f.get("test", []):
            if case in mapping:
                raise MfnsInputError(f"{source}: case {case!r} is in the test list of folds {mapping[case]} and {f['fold']}")
            mapping[case] = int(f["fold"])
    return mapping


def parse_named_dirs(items: list[str], option: str = "--pred") -> dict[str, Path | list[Path]]:
    """Parses `NAME=DIR` arguments into an ordered {name: Path}; a name given several times collects its
    folders in a list (e.g. one nnU-Net prediction folder per fold: MfNS_De=f0 MfNS_De=f1 ...)."""
    out: dict[str, Path | list[Path]] = {}
    for it in items:
        if "=" not in it:
            raise MfnsInputError(f"{option} {it!r}: expected NAME=DIR")
        name, d = it.split("=", 1)
        name = name.strip()
        if not name or not d:
            raise MfnsInputError(f"{option} {it!r}: expected NAME=DIR with a non-empty name and folder")
        if name in out:
            prev = out[name]
            out[name] = (prev if isinstance(prev, list) else [prev]) + [Path(d)]
        else:
            out[name] = Path(d)
    return out


def prediction_files(pred_dirs: dict[str, Path | list[Path]]) -> dict[str, dict[str, Path]]:
    """{method: {case: file}} over each method's folder(s); a case found in two folders of one method is an
    error (which prediction counts would be a guess)."""
    out: dict[str, dict[str, Path]] = {}
    for method, dirs in pred_dirs.items():
        files: dict[str, Path] = {}
        for d in (dirs if isinstance(dirs, (list, tuple)) else [dirs]):
            for case in list_cases(d, f"prediction ({method})"):
                f = Path(d) / (case + FILE_ENDING)
                if case in files:
                    raise MfnsInputError(f"{f}: case {case} of method {method!r} is also in {files[case].parent}")
                files[case] = f
        out[method] = files
    return out


def prepare_out_dir(out_dir: Path, overwrite: bool, produced: list[str]) -> Path:
    """Creates out_dir; refuses to write into a folder that already holds any of our outputs unless overwrite."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MfnsInputError(f"{out_dir}: output path exists and is not a folder")
    if out_dir.is_dir() and not overwrite:
        existing = [p for p in produced if (out_dir / p).exists()]
        if existing:
            raise MfnsInputError(f"{out_dir}: output folder already contains {existing[0]} (use --overwrite to replace)")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir
