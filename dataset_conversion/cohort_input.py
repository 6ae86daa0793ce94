"""Reading a cohort's inputs: a BIDS-like tree or a CSV manifest, unlabeled test scans and the optional
side tables (rater counts, rating slices). Every reader reports problems into a `ProblemList` instead of
raising, so that `pd_cohort.convert_pd_cohort` can show all of them at once; nothing here writes.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from .completeness import bids_id
from .nnunet_raw import REGION_NAMES
from .validation import ProblemList, is_nifti, strip_nifti_suffix


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
        paths = [p for p in paths if Path(os.path.realpath(p)) not in exclude]  # resolve() raises on a link loop
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
    # a broken link or link loop is listed (and refused when read), not skipped
    paths = sorted(q for q in p.iterdir() if (q.is_file() or q.is_symlink()) and is_nifti(q)) if p.is_dir() else \
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
