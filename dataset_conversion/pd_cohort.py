"""Convert a user's Parkinson's (or any) T2w/PVS cohort into an nnU-Net raw dataset.

Input is either a BIDS-like tree::

    root/participants.tsv                       participant_id, age, sex (tab-separated)
    root/sub-001/anat/sub-001_T2w.nii.gz        (sessions allowed: root/sub-001/ses-1/anat/...)
    root/derivatives/<name>/sub-001/anat/sub-001_..._PVS_mask.nii.gz

or a CSV manifest with columns subject, t2w, mask, age, sex (paths relative to the manifest's folder).
Optional: rater counts (CSV: subject, rater, region BG|CSO, count), rating slices (CSV: subject, BG,
CSO; 0-based indices along the slice axis), unlabeled scans for imagesTs.

`convert_pd_cohort` runs every check over the whole cohort first and raises one MfnsInputError listing
all problems (one line each, naming the file); only a clean cohort is written, atomically, by
`nnunet_raw.write_nnunet_raw_dataset`. Input files are only ever opened for reading.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_mfns.errors import MfnsInputError

from .cohort_input import (SubjectEntry, discover_bids, find_test_scans, read_manifest, read_rater_counts,
                           read_rating_slices)
from .completeness import bids_id, report_unconverted_bids, report_unknown_exclusions
from .nnunet_raw import (RawCase, check_dataset_parameters, check_output_target, dataset_folder_name,
                         write_nnunet_raw_dataset)
from .validation import (ProblemList, binarise_mask, geometry_mismatches, load_3d_image, mask_value_problems,
                         normalise_sex, parse_age)

logger = logging.getLogger(__name__)

MIN_SUBJECTS = 5  # five folds need at least one subject per group


# ------------------------------------------------------------------------------------------- convert


def _check_subject_files(entry: SubjectEntry, pvs_values: Sequence[int] | None, volume_index: int | None,
                         problems: ProblemList) -> None:
    image = load_3d_image(entry.t2w, "T2w image", problems, volume_index)
    if image is not None:
        entry.n_slices = image.image.GetSize()[2]
    if entry.mask is None:
        return
    mask = load_3d_image(entry.mask, "PVS mask", problems, volume_index, expect="label")
    if mask is None:
        return
    value_problems = mask_value_problems(mask.array, pvs_values)
    for problem in value_problems:
        problems.add(entry.mask, problem)
    if image is not None:
        mism = geometry_mismatches(image.image, mask.image)
        if mism:
            problems.add(entry.mask, f"does not match T2w {entry.t2w}: " + "; ".join(mism))
        elif not value_problems and not np.any(binarise_mask(mask.array, pvs_values)):
            # Allowed (a PVS-free subject is possible) but almost always a wrong mask or --pvs-values.
            logger.warning("%s: mask contains no PVS voxels", entry.mask)


def _image_loader(path: Path, volume_index: int | None):
    def load() -> sitk.Image:
        problems = ProblemList()
        loaded = load_3d_image(path, "T2w image", problems, volume_index)
        problems.raise_if_any(f"re-read of {path}")  # the file changed between check and write
        return loaded.image
    return load


def _label_loader(path: Path, volume_index: int | None, pvs_values: Sequence[int] | None):
    def load() -> sitk.Image:
        problems = ProblemList()
        loaded = load_3d_image(path, "PVS mask", problems, volume_index, expect="label")
        problems.raise_if_any(f"re-read of {path}")
        label = sitk.GetImageFromArray(binarise_mask(loaded.array, pvs_values))
        label.CopyInformation(loaded.image)
        return label
    return load


def _real(path: Path) -> Path:
    """Path.resolve() without its RuntimeError on a symbolic link loop (the loop is reported when read)."""
    return Path(os.path.realpath(path))


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def convert_pd_cohort(output_dir: str | Path, dataset_id: int, dataset_name: str, *,
                      bids_root: str | Path | None = None, manifest: str | Path | None = None,
                      derivatives_name: str | None = None, mask_pattern: str | None = None,
                      pvs_values: Sequence[int] | None = None, volume_index: int | None = None,
                      rater_counts: str | Path | None = None, rating_slices: str | Path | None = None,
                      test_scans: str | None = None, exclude_subjects: Sequence[str] | None = None,
                      overwrite: bool = False, case_prefix: str = "PVS",
                      min_subjects: int = MIN_SUBJECTS, created_by: dict | None = None,
                      show_progress: bool = True) -> Path:
    """Validate the whole cohort, then write `<output_dir>/DatasetXXX_<name>/` atomically.

    Exactly one of `bids_root` / `manifest`. Masks must be binary 0/1 unless `pvs_values` says which
    values are PVS (those become 1, everything must be 0 or a declared value). Every subject named by
    any input (participants.tsv, subject folders, masks, test scans, rater counts, rating slices) is
    converted, or reported, unless listed in `exclude_subjects`. Raises MfnsInputError
    listing every problem (one per line, naming the file) and writes nothing if anything is wrong.
    Returns the dataset folder.
    """
    problems = ProblemList()
    if (bids_root is None) == (manifest is None):
        raise MfnsInputError("input: give either a BIDS root or --manifest CSV (exactly one)")
    if manifest is not None and (derivatives_name or mask_pattern):
        raise MfnsInputError("--derivatives-name/--mask-pattern only apply to a BIDS root, not to --manifest")
    if derivatives_name and mask_pattern:
        raise MfnsInputError("--derivatives-name and --mask-pattern are alternatives; give one")
    if volume_index is not None and volume_index < 0:
        raise MfnsInputError(f"--volume-index: must be >= 0, got {volume_index}")

    check_dataset_parameters(dataset_id, dataset_name, problems, case_prefix)
    if problems:
        problems.raise_if_any("parameters")
    folder_name = dataset_folder_name(dataset_id, dataset_name)
    output_dir = Path(output_dir).absolute()
    target = check_output_target(output_dir, dataset_id, folder_name, overwrite, problems)
    input_root = Path(bids_root).absolute() if bids_root is not None else Path(manifest).absolute().parent
    if bids_root is not None and _is_within(target, input_root):
        problems.add(target, f"output would be inside the input tree {input_root}; choose another -o")

    excluded = {bids_id(s) if bids_root is not None else s for s in (exclude_subjects or []) if s}
    all_tests = find_test_scans(test_scans, problems) if test_scans else []
    tests = [t for t in all_tests if t.subject not in excluded]
    test_paths = frozenset(_real(t.path) for t in all_tests)
    if bids_root is not None:
        cohort = discover_bids(bids_root, problems, derivatives_name, mask_pattern, exclude=test_paths,
                               exclude_subjects=excluded)
    else:
        cohort = read_manifest(manifest, problems, exclude_subjects=excluded)

    # Ages and sexes (age is required for every training subject: it drives the stratification).
    for entry in cohort.subjects:
        entry.age = parse_age(entry.age_raw)
        entry.sex = normalise_sex(entry.sex_raw)
        # age_raw None means no participants row at all, which discover_bids already reported.
        if entry.age is None and entry.age_raw is not None:
            problems.add(entry.origin, f"age of {entry.subject} is missing or not numeric ({entry.age_raw!r})")
    if len(cohort.subjects) < min_subjects:
        source = bids_root if bids_root is not None else manifest
        problems.add(Path(source).absolute(), f"{len(cohort.subjects)} labelled subject(s) found; at least "
                                              f"{min_subjects} are needed for {min_subjects} age-stratified folds")

    # Test scans: ids must not clash with training subjects or each other; ages from participants.tsv.
    train_ids = {e.subject for e in cohort.subjects}
    train_paths = {_real(e.t2w) for e in cohort.subjects}
    seen_test: dict[str, Path] = {}
    for scan in tests:
        if scan.subject in train_ids:
            problems.add(scan.path, f"test scan subject {scan.subject} is also a labelled training subject")
        if _real(scan.path) in train_paths:
            problems.add(scan.path, "test scan is also a training T2w image")
        if scan.subject in seen_test:
            problems.add(scan.path, f"duplicate test subject {scan.subject} (also {seen_test[scan.subject]})")
        seen_test[scan.subject] = scan.path
        row = cohort.participants.get(scan.subject)
        if row:
            scan.age, scan.sex = parse_age(row["age"]), normalise_sex(row["sex"])

    # The files themselves: one subject at a time, so memory stays at one image pair.
    for entry in tqdm(cohort.subjects, desc="checking subjects", unit="subject", disable=not show_progress):
        _check_subject_files(entry, pvs_values, volume_index, problems)
    for scan in tests:
        loaded = load_3d_image(scan.path, "test scan", problems, volume_index)
        scan.n_slices = loaded.image.GetSize()[2] if loaded is not None else None

    converted = train_ids | set(seen_test)
    # Rows of excluded subjects are read (so a bad row is still reported) and then dropped.
    raters = read_rater_counts(rater_counts, converted | excluded, problems) if rater_counts else {}
    slice_counts: dict[str, int | None] = {s: None for s in excluded}
    slice_counts.update({e.subject: e.n_slices for e in cohort.subjects})
    slice_counts.update({t.subject: t.n_slices for t in tests})
    slices = read_rating_slices(rating_slices, slice_counts, problems) if rating_slices else {}

    # Nobody is lost: a subject that some input names but that is not about to be written is an error.
    mentioned = set(raters) | set(slices) | {t.subject for t in all_tests} | cohort.mentioned
    if bids_root is not None and cohort.tree_scanned:
        mentioned |= cohort.t2w_subjects | report_unconverted_bids(
            Path(bids_root).absolute(), converted, excluded, cohort.participants, derivatives_name, mask_pattern,
            already_named=cohort.t2w_subjects, test_subjects=set(seen_test), problems=problems)
    report_unknown_exclusions(excluded, mentioned, problems)
    raters = {k: v for k, v in raters.items() if k not in excluded}
    slices = {k: v for k, v in slices.items() if k not in excluded}

    problems.raise_if_any("input")
    if excluded:
        logger.info("left out on request (--exclude-subjects): %s", ", ".join(sorted(excluded)))

    # Everything checked: build the cases (files are re-read lazily while writing).
    cases: list[RawCase] = []
    ordered = sorted(cohort.subjects, key=lambda e: e.subject)
    for i, entry in enumerate(ordered, start=1):
        cases.append(RawCase(
            case_id=f"{case_prefix}_{i:03d}",
            image=_image_loader(entry.t2w, volume_index),
            label=_label_loader(entry.mask, volume_index, pvs_values),
            subset="train",
            metadata=_metadata(entry.subject, entry.age, entry.sex, slices, raters,
                               {"t2w": str(entry.t2w.absolute()), "mask": str(entry.mask.absolute())}),
        ))
    for j, scan in enumerate(sorted(tests, key=lambda t: t.subject), start=len(ordered) + 1):
        cases.append(RawCase(
            case_id=f"{case_prefix}_{j:03d}",
            image=_image_loader(scan.path, volume_index),
            label=None,
            subset="test",
            metadata=_metadata(scan.subject, scan.age, scan.sex, slices, raters,
                               {"t2w": str(scan.path), "mask": None}),
        ))
    if created_by is None:
        from nnunetv2_mfns import __version__
        created_by = {"tool": "nnunetv2_mfns.dataset_conversion.pd_cohort", "version": __version__,
                      "seed": None, "args": {"exclude_subjects": sorted(excluded)}}
    description = ("T2w MRI with PVS masks converted by nnunetv2-mfns from "
                   + (f"BIDS tree {Path(bids_root).absolute()}" if bids_root is not None else f"manifest {Path(manifest).absolute()}"))
    return write_nnunet_raw_dataset(output_dir, dataset_id, folder_name, cases, created_by, overwrite=overwrite,
                                    description=description, show_progress=show_progress)


def _metadata(subject: str, age: float | None, sex: str | None, slices: dict, raters: dict, source: dict) -> dict:
    return {
        "subject": subject,
        "age": age,
        "sex": sex,
        "rating_slices": slices.get(subject),
        "rater_counts": raters.get(subject),
        "source": source,
    }

