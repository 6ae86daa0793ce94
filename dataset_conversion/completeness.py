"""The converter loses nobody: every subject named by any input is converted or named in an error.

A subject can appear in a BIDS-like tree in several independent places: a row of participants.tsv, a
`sub-*` folder, a PVS mask under `derivatives/`, a line of the rater-count or rating-slice tables. The
converter builds its cases from the T2w images it finds, so a subject that has, say, a mask and a
participants row but no T2w image would otherwise simply not be there (issue 11: 7 of 8 subjects
converted, exit 0). This module lists the subjects each input names, so that the converter can report
every one it is not going to write, naming the file that mentions it. Subjects the user leaves out on
purpose are passed with `--exclude-subjects`; they are dropped from every input and recorded.
"""
from __future__ import annotations

import glob
import logging
import re
from pathlib import Path
from typing import Iterable, Mapping

from .validation import ProblemList, is_nifti

logger = logging.getLogger(__name__)

# BIDS subject labels are alphanumeric (BIDS spec, "sub-<label>"); the folder name is the subject id.
_SUBJECT_RE = r"sub-[A-Za-z0-9]+"


def bids_id(value: str) -> str:
    """participant_id as written in participants.tsv -> the subject folder name ('005' -> 'sub-005')."""
    return value if value.startswith("sub-") else f"sub-{value}"


def subject_folders(root: Path) -> dict[str, Path]:
    """`sub-*` folders directly under the BIDS root (a subject's images live there)."""
    return {p.name: p for p in sorted(root.glob("sub-*")) if p.is_dir()}


def _pattern_regex(pattern: str) -> re.Pattern:
    """A --mask-pattern glob ('derivatives/x/{subject}/anat/{subject}_mask.nii.gz') as a regex whose
    group 's' is the subject; '*' and '?' do not cross folder boundaries, like glob's."""
    out, first = [], True
    for piece in re.split(r"(\{subject\}|\*|\?)", pattern):
        if piece == "{subject}":
            out.append(f"(?P<s>{_SUBJECT_RE})" if first else "(?P=s)")
            first = False
        elif piece == "*":
            out.append("[^/]*")
        elif piece == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(piece))
    return re.compile("".join(out) + r"\Z")


def mask_files_by_subject(root: Path, derivatives_name: str | None, mask_pattern: str | None) -> dict[str, list[Path]]:
    """Every PVS mask file the converter's mask search could pick, grouped by the subject it belongs to.

    Mirrors `cohort_input._find_bids_mask` (wider: any subject, anywhere under sub-X, so that a mask whose
    subject has no T2w is still found and named): with `mask_pattern` the files matching the pattern for any
    subject; otherwise `*PVS_mask.nii[.gz]` files under derivatives/<name or every name>/sub-*/.
    """
    found: dict[str, list[Path]] = {}
    if mask_pattern is not None:
        full = mask_pattern if Path(mask_pattern).is_absolute() else str(root / mask_pattern)
        regex = _pattern_regex(full)
        for m in sorted(glob.glob(full.replace("{subject}", "sub-*"))):
            hit = regex.match(m)
            if hit and is_nifti(m):
                found.setdefault(hit.group("s"), []).append(Path(m))
        return found
    deriv_root = root / "derivatives"
    if not deriv_root.is_dir():
        return found
    names = [derivatives_name] if derivatives_name else sorted(d.name for d in deriv_root.iterdir() if d.is_dir())
    for name in names:
        for sub in sorted((deriv_root / name).glob("sub-*")):
            if not sub.is_dir():
                continue
            for m in sorted(sub.rglob("*PVS_mask.nii*")):
                if is_nifti(m):
                    found.setdefault(sub.name, []).append(m)
    return found


def report_unconverted_bids(root: Path, converted: set[str], excluded: set[str],
                            participants: Mapping[str, dict] | None, derivatives_name: str | None,
                            mask_pattern: str | None, already_named: set[str], test_subjects: set[str],
                            problems: ProblemList) -> set[str]:
    """Add one problem per subject that the BIDS tree names but that will not be converted.

    `converted`: training subjects and test scans that will be written; `excluded`: --exclude-subjects;
    `already_named`: subjects that have a T2w image, so that another check covers them (converted, or
    reported as a duplicate); `test_subjects`: unlabeled scans, whose masks are not used (warned).
    Returns every subject the tree names (folders, masks, participants rows).
    """
    skip = converted | excluded | already_named
    t2w_hint = "sub-X/anat/sub-X_T2w.nii[.gz]"
    reported: set[str] = set()
    folders = subject_folders(root)
    masks_by_subject = mask_files_by_subject(root, derivatives_name, mask_pattern)
    for subject, folder in folders.items():
        if subject not in skip:
            problems.add(folder, f"subject folder of {subject} has no T2w image ({t2w_hint}); add it, "
                                 f"or leave the subject out with --exclude-subjects {subject}")
            reported.add(subject)
    for subject, masks in masks_by_subject.items():
        if subject in test_subjects:
            # Not lost (the scan is converted to imagesTs) but its mask is unused: say so.
            logger.warning("%s: %s is a --test-scans subject, so this PVS mask is not used", masks[0], subject)
        if subject not in skip and subject not in reported:
            problems.add(masks[0], f"PVS mask of {subject} has no T2w image ({t2w_hint}); add it, "
                                   f"or leave the subject out with --exclude-subjects {subject}")
            reported.add(subject)
    for subject, row in (participants or {}).items():
        if subject not in skip and subject not in reported:
            problems.add(f"{root / 'participants.tsv'} line {row['line']}",
                         f"{subject} has no T2w image ({t2w_hint}); add it, or leave the subject out with "
                         f"--exclude-subjects {subject}")
    return set(folders) | set(masks_by_subject) | set(participants or {})


def report_unknown_exclusions(excluded: Iterable[str], mentioned: set[str], problems: ProblemList) -> None:
    """An --exclude-subjects id that no input names is almost certainly a typo: refuse it."""
    for subject in sorted(set(excluded) - mentioned):
        problems.add("--exclude-subjects", f"{subject} appears in no input")
