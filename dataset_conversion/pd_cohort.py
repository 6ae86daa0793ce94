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

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_mfns.errors import MfnsInputError

from .completeness import bids_id, report_unconverted_bids, report_unknown_exclusions
from .nnunet_raw import (REGION_NAMES, RawCase, check_dataset_parameters, check_output_target,
                         dataset_folder_name, write_nnunet_raw_dataset)
from .validation import (ProblemList, binarise_mask, geometry_mismatches, is_nifti, load_3d_image,
                         mask_value_problems, normalise_sex, parse_age, strip_nifti_suffix)

logger = logging.getLogger(__name__)

MIN_SUBJECTS = 5  # five folds need at least one subject per group


@dataclass
class SubjectEntry:
    """One labelled subject as found in the input (before any checks on the files)."""

    subject: str
    t2w: Path
    mask: Path | None
    age_raw: object
    sex_raw: object
    origin: str  # where the subject's row/age came from, used in problem messages
    age: float | None = None
    sex: str | None = None
    n_slices: int | None = None  # filled in when the image was read


@dataclass
class TestScan:
    subject: str
    path: Path
    age: float | None = None
    sex: str | None = None
    n_slices: int | None = None


@dataclass
class CohortInput:
    subjects: list[SubjectEntry] = field(default_factory=list)
    participants: dict[str, dict] = field(default_factory=dict)  # BIDS only: participant_id -> row
    participants_read: bool = False  # BIDS only: participants.tsv could be read
    t2w_subjects: set[str] = field(default_factory=set)  # BIDS: subjects with >= 1 T2w image found
    tree_scanned: bool = False  # BIDS: root and options were usable, so the tree was searched
    mentioned: set[str] = field(default_factory=set)  # manifest: every subject of a row


def _read_table(path: Path, sep: str, problems: ProblemList, required: Sequence[str]) -> pd.DataFrame | None:
    """Read a CSV/TSV as strings (no NA guessing, so 'n/a' stays visible); report missing columns."""
    if not path.is_file():
        problems.add(path, "file does not exist")
        return None
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        problems.add(path, f"cannot be parsed as {'TSV' if sep == chr(9) else 'CSV'} ({str(e).strip()})")
        return None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        problems.add(path, f"missing column(s) {', '.join(missing)} (has: {', '.join(df.columns)})")
        return None
    return df.apply(lambda col: col.str.strip())


# ---------------------------------------------------------------------------------------------- BIDS


def read_participants(root: Path, problems: ProblemList) -> dict[str, dict] | None:
    """participant_id -> {'age': raw, 'sex': raw, 'line': n} from participants.tsv (None if unusable)."""
    path = root / "participants.tsv"
    df = _read_table(path, "\t", problems, ["participant_id", "age"])
    if df is None:
        return None
    out: dict[str, dict] = {}
    for i, row in df.iterrows():
        line = int(i) + 2  # header is line 1
        pid = bids_id(row["participant_id"]) if row["participant_id"] else ""
        if not pid:
            problems.add(f"{path} line {line}", "empty participant_id")
            continue
        if pid in out:
            problems.add(f"{path} line {line}", f"duplicate participant_id {pid} (also line {out[pid]['line']})")
            continue
        out[pid] = {"age": row["age"], "sex": row.get("sex", ""), "line": line}
    return out


def _find_bids_t2w(root: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for pattern in ("sub-*/anat/sub-*_T2w.nii*", "sub-*/ses-*/anat/sub-*_T2w.nii*"):
        for p in sorted(root.glob(pattern)):
            if is_nifti(p):
                subject = p.relative_to(root).parts[0]
                found.setdefault(subject, []).append(p)
    return found


def _find_bids_mask(root: Path, t2w: Path, subject: str, derivatives_name: str | None,
                    mask_pattern: str | None, problems: ProblemList) -> Path | None:
    if mask_pattern is not None:
        pattern = mask_pattern.replace("{subject}", subject)
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        matches = sorted(Path(m) for m in glob.glob(full) if is_nifti(m))
        where = f"--mask-pattern {pattern}"
    else:
        rel_dir = t2w.parent.relative_to(root)  # sub-X/anat or sub-X/ses-Y/anat
        deriv_root = root / "derivatives"
        names = [derivatives_name] if derivatives_name else sorted(
            d.name for d in deriv_root.iterdir() if d.is_dir()) if deriv_root.is_dir() else []
        matches = []
        for name in names:
            matches += sorted(p for p in (deriv_root / name / rel_dir).glob(f"{subject}*PVS_mask.nii*") if is_nifti(p))
        where = f"derivatives/{derivatives_name or '*'}/{rel_dir}/{subject}*_PVS_mask.nii[.gz]"
    if not matches:
        problems.add(t2w, f"no PVS mask found for {subject} ({where})")
        return None
    if len(matches) > 1:
        hint = "use --mask-pattern" if mask_pattern is None and derivatives_name else \
            "use --derivatives-name or --mask-pattern"
        problems.add(t2w, f"{len(matches)} PVS masks match for {subject} ({', '.join(map(str, matches))}); {hint}")
        return None
    return matches[0]


def discover_bids(root: str | Path, problems: ProblemList, derivatives_name: str | None = None,
                  mask_pattern: str | None = None, exclude: set[Path] | frozenset = frozenset(),
                  exclude_subjects: set[str] | frozenset = frozenset()) -> CohortInput:
    """Find T2w images, their PVS masks and participants.tsv rows in a BIDS-like tree.

    T2w files in `exclude` (resolved paths, e.g. the unlabeled test scans) are not training subjects;
    subjects in `exclude_subjects` (--exclude-subjects) are left out entirely.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        problems.add(root, "BIDS root is not a folder")
        return CohortInput()
    if mask_pattern is not None and "{subject}" not in mask_pattern:
        problems.add("--mask-pattern", f"{mask_pattern!r} must contain the placeholder {{subject}}")
        return CohortInput()
    if derivatives_name is not None and not (root / "derivatives" / derivatives_name).is_dir():
        problems.add(root / "derivatives" / derivatives_name, "derivatives folder does not exist (--derivatives-name)")
        return CohortInput()
    participants = read_participants(root, problems)
    cohort = CohortInput(participants=participants or {}, participants_read=participants is not None)
    t2w_by_subject = _find_bids_t2w(root)
    cohort.t2w_subjects = set(t2w_by_subject)
    cohort.tree_scanned = True
    for subject, paths in sorted(t2w_by_subject.items()):
        if subject in exclude_subjects:
            continue
        paths = [p for p in paths if p.resolve() not in exclude]
        if not paths:
            continue
        if len(paths) > 1:
            problems.add(root / subject, f"duplicate subject {subject}: {len(paths)} T2w images "
                                         f"({', '.join(p.name for p in paths)}); keep one per subject")
            continue
        t2w = paths[0]
        mask = _find_bids_mask(root, t2w, subject, derivatives_name, mask_pattern, problems)
        row = participants.get(subject) if participants is not None else None
        if row is None and participants is not None:
            problems.add(root / "participants.tsv", f"no row for {subject} (age is required)")
        origin = f"{root / 'participants.tsv'}" + (f" line {row['line']}" if row else "")
        cohort.subjects.append(SubjectEntry(subject=subject, t2w=t2w, mask=mask,
                                            age_raw=row["age"] if row else None,
                                            sex_raw=row["sex"] if row else None, origin=origin))
    if not t2w_by_subject:
        problems.add(root, "no T2w images found (expected sub-*/anat/sub-*_T2w.nii[.gz])")
    return cohort


# ------------------------------------------------------------------------------------------ manifest


def read_manifest(manifest: str | Path, problems: ProblemList,
                  exclude_subjects: set[str] | frozenset = frozenset()) -> CohortInput:
    """Subjects from a CSV with columns subject, t2w, mask, age[, sex]; relative paths are relative
    to the manifest's folder. Rows of `exclude_subjects` are skipped (but remembered as mentioned)."""
    manifest = Path(manifest).absolute()
    df = _read_table(manifest, ",", problems, ["subject", "t2w", "mask", "age"])
    cohort = CohortInput()
    if df is None:
        return cohort
    if len(df) == 0:
        problems.add(manifest, "manifest has no rows")
    seen: dict[str, int] = {}
    for i, row in df.iterrows():
        line = int(i) + 2
        where = f"{manifest} line {line}"
        subject = row["subject"]
        if not subject:
            problems.add(where, "empty subject")
            continue
        if subject in seen:
            problems.add(where, f"duplicate subject {subject} (also line {seen[subject]})")
            continue
        seen[subject] = line
        cohort.mentioned.add(subject)
        if subject in exclude_subjects:
            continue
        if not row["t2w"]:
            problems.add(where, f"empty t2w path for {subject}")
            continue
        t2w = Path(row["t2w"]) if Path(row["t2w"]).is_absolute() else manifest.parent / row["t2w"]
        mask = None
        if not row["mask"]:
            problems.add(where, f"empty mask path for {subject} (every training subject needs a PVS mask)")
        else:
            mask = Path(row["mask"]) if Path(row["mask"]).is_absolute() else manifest.parent / row["mask"]
        cohort.subjects.append(SubjectEntry(subject=subject, t2w=t2w, mask=mask, age_raw=row["age"],
                                            sex_raw=row.get("sex", ""), origin=where))
    return cohort


# ---------------------------------------------------------------------------- test scans and extras


def find_test_scans(spec: str, problems: ProblemList) -> list[TestScan]:
    """Unlabeled scans for imagesTs: every NIfTI in a folder, or a glob pattern (relative to the cwd)."""
    p = Path(spec)
    paths = sorted(q for q in p.iterdir() if q.is_file() and is_nifti(q)) if p.is_dir() else \
        sorted(Path(m).absolute() for m in glob.glob(spec) if is_nifti(m))
    if not paths:
        problems.add(f"--test-scans {spec}", "no NIfTI files found")
    scans = []
    for path in paths:
        stem = strip_nifti_suffix(path.name)
        # BIDS names carry entities after the subject (sub-021_ses-1_T2w): the subject is the first one.
        subject = stem.split("_")[0] if stem.startswith("sub-") else stem
        scans.append(TestScan(subject=subject, path=path.absolute()))
    return scans


def read_rater_counts(path: str | Path, known: set[str], problems: ProblemList) -> dict[str, dict[str, dict[str, int]]]:
    """subject -> rater -> region -> count from a CSV with columns subject, rater, region, count."""
    path = Path(path).absolute()
    df = _read_table(path, ",", problems, ["subject", "rater", "region", "count"])
    out: dict[str, dict[str, dict[str, int]]] = {}
    if df is None:
        return out
    for i, row in df.iterrows():
        where = f"{path} line {int(i) + 2}"
        subject, rater, region = row["subject"], row["rater"], row["region"].upper()
        ok = True
        if subject not in known:
            problems.add(where, f"unknown subject {subject!r}")
            ok = False
        if not rater:
            problems.add(where, "empty rater")
            ok = False
        if region not in REGION_NAMES:
            problems.add(where, f"region must be BG or CSO, got {row['region']!r}")
            ok = False
        try:
            count = int(row["count"])
            if count < 0:
                raise ValueError
        except ValueError:
            problems.add(where, f"count must be a non-negative integer, got {row['count']!r}")
            ok = False
        if not ok:
            continue
        per_rater = out.setdefault(subject, {}).setdefault(rater, {})
        if region in per_rater:
            problems.add(where, f"duplicate count for {subject}, rater {rater}, region {region}")
            continue
        per_rater[region] = count
    return out


def read_rating_slices(path: str | Path, n_slices: dict[str, int | None], problems: ProblemList) -> dict[str, dict[str, int | None]]:
    """subject -> {'BG': idx|None, 'CSO': idx|None} from a CSV with columns subject, BG, CSO.

    Indices are 0-based along the slice axis (ITK index axis 2) and must lie inside the image.
    """
    path = Path(path).absolute()
    df = _read_table(path, ",", problems, ["subject"])
    out: dict[str, dict[str, int | None]] = {}
    if df is None:
        return out
    regions = [r for r in REGION_NAMES if r in df.columns]
    if not regions:
        problems.add(path, "needs a BG and/or a CSO column with slice indices")
        return out
    for i, row in df.iterrows():
        where = f"{path} line {int(i) + 2}"
        subject = row["subject"]
        if subject not in n_slices:
            problems.add(where, f"unknown subject {subject!r}")
            continue
        if subject in out:
            problems.add(where, f"duplicate row for {subject}")
            continue
        entry: dict[str, int | None] = {r: None for r in REGION_NAMES}
        for region in regions:
            text = row[region]
            if text == "" or text.lower() in {"n/a", "na"}:
                continue
            try:
                idx = int(text)
            except ValueError:
                problems.add(where, f"{region} slice must be an integer, got {text!r}")
                continue
            n = n_slices[subject]
            if idx < 0 or (n is not None and idx >= n):
                problems.add(where, f"{region} slice {idx} of {subject} is outside 0..{(n or 1) - 1}")
                continue
            entry[region] = idx
        out[subject] = entry
    return out


# ------------------------------------------------------------------------------------------- convert


def _check_subject_files(entry: SubjectEntry, pvs_values: Sequence[int] | None, volume_index: int | None,
                         problems: ProblemList) -> None:
    image = load_3d_image(entry.t2w, "T2w image", problems, volume_index)
    if image is not None:
        entry.n_slices = image.image.GetSize()[2]
    if entry.mask is None:
        return
    mask = load_3d_image(entry.mask, "PVS mask", problems, volume_index)
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
        loaded = load_3d_image(path, "PVS mask", problems, volume_index)
        problems.raise_if_any(f"re-read of {path}")
        label = sitk.GetImageFromArray(binarise_mask(loaded.array, pvs_values))
        label.CopyInformation(loaded.image)
        return label
    return load


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
    test_paths = frozenset(t.path.resolve() for t in all_tests)
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
    train_paths = {e.t2w.resolve() for e in cohort.subjects}
    seen_test: dict[str, Path] = {}
    for scan in tests:
        if scan.subject in train_ids:
            problems.add(scan.path, f"test scan subject {scan.subject} is also a labelled training subject")
        if scan.path.resolve() in train_paths:
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

