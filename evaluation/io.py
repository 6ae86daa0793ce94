"""Reading and checking the inputs of the evaluation: label/prediction folders, subjects.json, mfns_splits.json.

Every problem with user input is raised as `MfnsInputError` with a one-line message that names the file.
Images are read with SimpleITK, so arrays are (z, y, x) = numpy axis 0 is the axial slice axis
(ITK index axis 2), matching docs/interfaces.md.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_mfns.errors import MfnsInputError, output_folder_problem, read_json_file
from nnunetv2_mfns.image_checks import read_checked

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


def check_input_file(path: Path, what: str = "input file") -> Path:
    """A path the user gave as a file: a folder or a missing path is named as such (a folder is not 'not found')."""
    path = Path(path)
    if path.is_dir():
        raise MfnsInputError(f"{path}: is a directory, expected the {what}")
    if not path.is_file():
        raise MfnsInputError(f"{path}: {what} not found")
    return path


def read_image(path: Path, role: str = "image") -> tuple[np.ndarray, Geometry]:
    """Array (numpy axis order z, y, x) and geometry of a scan, after every check of
    `nnunetv2_mfns.image_checks` (complete gzip stream, sane header, finite and non-constant values)."""
    checked = read_checked(path, role, "image")
    return checked.array, geometry_of(checked.image)


def read_binary_mask(path: Path, role: str = "prediction") -> tuple[np.ndarray, Geometry]:
    """Reads a segmentation that must contain only 0 and 1 (checked by `image_checks.read_checked`);
    returns a bool array and its geometry."""
    checked = read_checked(path, role, "binary_mask")
    return checked.array.astype(bool), geometry_of(checked.image)


def read_region_mask(path: Path, role: str = "region mask") -> tuple[np.ndarray, Geometry]:
    """Region masks: any non-negative integer image, inside = non-zero (writers may use 1 or 255)."""
    checked = read_checked(path, role, "region")
    return checked.array > 0, geometry_of(checked.image)


def list_cases(folder: Path, role: str) -> list[str]:
    """Case identifiers (file name without `.nii.gz`) of a label or prediction folder, sorted."""
    folder = Path(folder)
    if folder.is_file():
        raise MfnsInputError(f"{folder}: is a file, expected the {role} folder")
    if not folder.is_dir():
        raise MfnsInputError(f"{folder}: {role} folder not found")
    cases = sorted(f[:-len(FILE_ENDING)] for f in os.listdir(folder) if f.endswith(FILE_ENDING))
    if not cases:
        raise MfnsInputError(f"{folder}: {role} folder contains no {FILE_ENDING} files")
    return cases


def load_subjects(path: Path) -> dict:
    """Reads subjects.json (schema nnunetv2_mfns.subjects/1) and checks the parts the evaluation uses."""
    path = check_input_file(path, "subjects.json file")
    data = read_json_file(path)
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
    path = check_input_file(path, "mfns_splits.json file")
    data = read_json_file(path)
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


FOLD_FOLDER = re.compile(r"fold_(\d+)")


def check_fold_membership(pred_dirs: dict[str, Path | list[Path]], splits: dict, source: str = "splits") -> None:
    """Refuses a prediction in a folder named `fold_k` (as mfns-compare writes them) whose case is not in fold k's
    test group: a model predicting a case it was trained or validated on must never be scored silently."""
    folds = {int(f["fold"]): f for f in splits["folds"]}
    for method, dirs in pred_dirs.items():
        for d in (dirs if isinstance(dirs, (list, tuple)) else [dirs]):
            m = FOLD_FOLDER.fullmatch(Path(d).name)
            if m is None:
                continue
            k = int(m.group(1))
            if k not in folds:
                raise MfnsInputError(f"{d}: prediction folder of method {method!r} is named fold_{k} but {source} has no "
                                     f"fold {k} (folds {', '.join(str(x) for x in sorted(folds))})")
            test = set(folds[k].get("test", []))
            for case in list_cases(d, f"prediction ({method})"):
                if case in test:
                    continue
                where = [g for g in ("train", "val") if case in set(folds[k].get(g, []))]
                other = [j for j, f in folds.items() if case in set(f.get("test", []))]
                why = (f"it is in fold {k}'s {where[0]} group" if where else f"it is not in fold {k} at all") + (
                    f"; fold {other[0]} tests it" if other else "")
                raise MfnsInputError(f"{Path(d) / (case + FILE_ENDING)}: case {case} of method {method!r} is in folder "
                                     f"fold_{k} but not in fold {k}'s test group of {source} ({why})")


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


def check_out_dir(out_dir: Path, overwrite: bool, produced: list[str]) -> Path:
    """Checks, without creating anything, that out_dir can receive our outputs: not a file, and holding none of
    them unless overwrite. Call it with the other input checks, before any work."""
    out_dir = Path(out_dir)
    problem = output_folder_problem(out_dir)
    if problem:
        raise MfnsInputError(f"{out_dir}: {problem}")
    if out_dir.is_dir() and not overwrite:
        existing = [p for p in produced if (out_dir / p).exists()]
        if existing:
            raise MfnsInputError(f"{out_dir}: output folder already contains {existing[0]} (use --overwrite to replace)")
    return out_dir


def prepare_out_dir(out_dir: Path, overwrite: bool, produced: list[str]) -> Path:
    """check_out_dir, then creates out_dir: call it only once every input has been read and checked, so that a
    refused run leaves no folder behind."""
    out_dir = check_out_dir(out_dir, overwrite, produced)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def write_image_atomic(arr: np.ndarray, reference: sitk.Image, path: Path) -> None:
    """uint8/uint16 array (z, y, x) with `reference`'s geometry, written to a temporary name and renamed."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.CopyInformation(reference)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".nii.gz", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(img, tmp, useCompression=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
