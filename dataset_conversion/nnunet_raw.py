"""Atomic writing of an nnU-Net v2 raw dataset (imagesTr, labelsTr, imagesTs, regions, dataset.json,
subjects.json) as laid down in docs/interfaces.md.

Used by the PD converter and reusable by the phantom generator: cases are given as `RawCase` objects
whose images may be callables, so only one case is held in memory at a time.

Everything is written into a hidden temporary folder next to the target and renamed into place at the
end; on any exception (including Ctrl-C) the temporary folder is removed, so an interrupted run never
leaves a half dataset where nnU-Net would find it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_mfns.errors import MfnsInputError, output_folder_problem, read_json_file

from .validation import ProblemList, geometry_mismatches

logger = logging.getLogger(__name__)

SUBJECTS_SCHEMA = "nnunetv2_mfns.subjects/1"
SLICE_AXIS_NOTE = "ITK index axis 2 (numpy axis 0 of sitk.GetArrayFromImage)"
FILE_ENDING = ".nii.gz"
CHANNEL_NAMES = {"0": "T2"}
LABELS = {"background": 0, "PVS": 1}
REGION_NAMES = ("BG", "CSO")

CASE_ID_RE = re.compile(r"^[A-Za-z0-9]+_[0-9]{3,}$")
CASE_PREFIX_RE = re.compile(r"^[A-Za-z0-9]+$")
DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

ImageSource = Union[sitk.Image, Callable[[], sitk.Image]]


@dataclass
class RawCase:
    """One case of the dataset. `subset` is 'train' (imagesTr + labelsTr) or 'test' (imagesTs).

    `metadata` becomes the case's entry in subjects.json (subject, age, sex, rating_slices, ...);
    `set` and, when `regions` are given, `region_masks` are filled in by the writer.
    """

    case_id: str
    image: ImageSource
    label: ImageSource | None = None
    subset: str = "train"
    metadata: dict = field(default_factory=dict)
    regions: dict[str, ImageSource] | None = None


def dataset_folder_name(dataset_id: int, dataset_name: str) -> str:
    """'Dataset501_PVSPhantom' from (501, 'PVSPhantom'); a full 'DatasetXXX_' name is accepted as is."""
    if dataset_name.startswith("Dataset") and re.match(r"^Dataset\d{3}_", dataset_name):
        if int(dataset_name[7:10]) != dataset_id:
            raise MfnsInputError(f"--dataset-name {dataset_name!r} does not match --dataset-id {dataset_id}")
        return dataset_name
    return f"Dataset{dataset_id:03d}_{dataset_name}"


def check_dataset_parameters(dataset_id: int, dataset_name: str, problems: ProblemList,
                             case_prefix: str | None = None) -> None:
    """Report invalid dataset id / name / case prefix (nnU-Net needs 3-digit ids and no spaces)."""
    if not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        problems.add("--dataset-id", f"must be an integer between 1 and 999, got {dataset_id!r}")
    base = dataset_name[11:] if re.match(r"^Dataset\d{3}_", dataset_name or "") else dataset_name
    if not base or not DATASET_NAME_RE.match(base):
        problems.add("--dataset-name", f"{dataset_name!r} must be letters, digits, '-' or '_' (no spaces)")
    if case_prefix is not None and not CASE_PREFIX_RE.match(case_prefix):
        problems.add("--case-prefix", f"{case_prefix!r} must be letters and digits only (nnU-Net case ids are PREFIX_NNN)")


def check_output_target(output_root: Path, dataset_id: int, folder_name: str, overwrite: bool,
                        problems: ProblemList) -> Path:
    """Report an existing target (unless overwrite) and any other folder with the same dataset id.

    A second DatasetXXX_* folder with the same id makes nnU-Net's id->name lookup fail, so it is an
    error even with --overwrite (we never delete a folder we did not write under that name).
    """
    output_root = Path(output_root)
    target = output_root / folder_name
    if output_root.exists() and not output_root.is_dir():
        problems.add(output_root, "output location exists and is not a folder")
        return target
    problem = output_folder_problem(output_root)
    if problem:
        problems.add(output_root, problem)
        return target
    if target.exists() and not overwrite:
        problems.add(target, "output dataset already exists; pass --overwrite to replace it")
    if output_root.is_dir():
        prefix = f"Dataset{dataset_id:03d}_"
        for other in sorted(output_root.glob(prefix + "*")):
            if other.name != folder_name and other.is_dir():
                problems.add(other, f"another dataset with id {dataset_id:03d} exists here; choose a different --dataset-id")
    return target


def _materialise(source: ImageSource) -> sitk.Image:
    return source() if callable(source) else source


def _as_label(image: sitk.Image, reference: sitk.Image, what: str) -> sitk.Image:
    """uint8 0/1 label on the reference geometry; refuses anything else (callers binarise first)."""
    mism = geometry_mismatches(reference, image)
    if mism:
        raise MfnsInputError(f"{what}: " + "; ".join(mism))
    arr = sitk.GetArrayViewFromImage(image)
    values = np.unique(arr)
    if not set(values.tolist()) <= {0, 1}:
        raise MfnsInputError(f"{what}: label values must be 0/1, found {values.tolist()[:10]}")
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    # Copy the image's geometry exactly: within-tolerance differences would otherwise reach nnU-Net,
    # whose integrity check compares image and label headers.
    out.CopyInformation(reference)
    return out


def _check_cases(cases: Sequence[RawCase]) -> None:
    problems = ProblemList()
    seen: set[str] = set()
    for case in cases:
        if not CASE_ID_RE.match(case.case_id):
            problems.add(case.case_id, "case id must look like PREFIX_NNN (letters/digits, '_', 3+ digits)")
        if case.case_id in seen:
            problems.add(case.case_id, "duplicate case id")
        seen.add(case.case_id)
        if case.subset not in ("train", "test"):
            problems.add(case.case_id, f"subset must be 'train' or 'test', got {case.subset!r}")
        if case.subset == "train" and case.label is None:
            problems.add(case.case_id, "training case without a label")
        for region in (case.regions or {}):
            if region not in REGION_NAMES:
                problems.add(case.case_id, f"unknown region {region!r}; expected one of {REGION_NAMES}")
    if not any(c.subset == "train" for c in cases):
        problems.add("dataset", "no training cases")
    problems.raise_if_any("cases to write")


def write_nnunet_raw_dataset(output_root: str | Path, dataset_id: int, dataset_name: str,
                             cases: Sequence[RawCase], created_by: dict, overwrite: bool = False,
                             description: str | None = None, license: str = "not specified",
                             show_progress: bool = True) -> Path:
    """Write `cases` as `<output_root>/DatasetXXX_Name/` atomically and return that path.

    Images are stored float32, labels and region masks uint8 (0/1) with the image's geometry,
    `dataset.json` via nnU-Net's own `generate_dataset_json`, and `subjects.json` per docs/interfaces.md.
    Raises MfnsInputError if the target exists (without `overwrite`) or the cases are inconsistent.
    """
    output_root = Path(output_root).absolute()
    folder_name = dataset_folder_name(dataset_id, dataset_name)
    problems = ProblemList()
    check_dataset_parameters(dataset_id, folder_name, problems)
    target = check_output_target(output_root, dataset_id, folder_name, overwrite, problems)
    problems.raise_if_any("output settings")
    _check_cases(cases)

    # Imported here so that importing this module stays cheap; nnU-Net's helper fixes the json layout.
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    output_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.partial-", dir=output_root))
    try:
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir()
        if any(c.subset == "test" for c in cases):
            (tmp / "imagesTs").mkdir()
        if any(c.regions for c in cases):
            (tmp / "regions").mkdir()
        subjects: dict[str, dict] = {}
        for case in tqdm(cases, desc=f"writing {folder_name}", unit="case", disable=not show_progress):
            image = sitk.Cast(_materialise(case.image), sitk.sitkFloat32)
            image_dir = "imagesTr" if case.subset == "train" else "imagesTs"
            sitk.WriteImage(image, str(tmp / image_dir / f"{case.case_id}_0000{FILE_ENDING}"), useCompression=True)
            if case.label is not None and case.subset == "train":
                label = _as_label(_materialise(case.label), image, f"label of {case.case_id}")
                sitk.WriteImage(label, str(tmp / "labelsTr" / f"{case.case_id}{FILE_ENDING}"), useCompression=True)
            entry = dict(case.metadata)
            entry["set"] = case.subset
            if case.regions:
                entry["region_masks"] = {}
                for region, source in case.regions.items():
                    rel = f"regions/{case.case_id}_{region}{FILE_ENDING}"
                    mask = _as_label(_materialise(source), image, f"{region} region of {case.case_id}")
                    sitk.WriteImage(mask, str(tmp / rel), useCompression=True)
                    entry["region_masks"][region] = rel
            subjects[case.case_id] = entry

        n_train = sum(1 for c in cases if c.subset == "train")
        generate_dataset_json(str(tmp), dict(CHANNEL_NAMES), dict(LABELS), n_train, FILE_ENDING,
                              dataset_name=folder_name, description=description, license=license,
                              converted_by=str(created_by.get("tool", "nnunetv2_mfns")))
        subjects_doc = {
            "schema": SUBJECTS_SCHEMA,
            "dataset_name": folder_name,
            "created_by": created_by,
            "slice_axis": SLICE_AXIS_NOTE,
            "subjects": subjects,
        }
        with open(tmp / "subjects.json", "w") as f:
            json.dump(subjects_doc, f, indent=2)
        _move_into_place(tmp, target)
    except BaseException:
        # BaseException on purpose: a Ctrl-C must not leave the partial folder behind either.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s (%d training, %d test cases)", target, n_train, len(cases) - n_train)
    return target


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename tmp -> target; an existing target (overwrite) is moved aside first and restored on failure."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        old.rmdir()
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_subjects_json(dataset_dir: str | Path) -> dict:
    """Read and minimally check `<dataset_dir>/subjects.json`."""
    path = Path(dataset_dir) / "subjects.json"
    doc = read_json_file(path, "convert the dataset with mfns-convert-pd or mfns-make-phantom")
    if doc.get("schema") != SUBJECTS_SCHEMA or not isinstance(doc.get("subjects"), dict):
        raise MfnsInputError(f"{path}: not a {SUBJECTS_SCHEMA} file (schema={doc.get('schema')!r})")
    return doc


def iter_cases(subjects_doc: dict, subset: str | None = "train") -> Iterable[tuple[str, dict]]:
    """(case_id, entry) pairs of subjects.json, optionally only one subset, sorted by case id."""
    for case_id in sorted(subjects_doc["subjects"]):
        entry = subjects_doc["subjects"][case_id]
        if subset is None or entry.get("set", "train") == subset:
            yield case_id, entry
