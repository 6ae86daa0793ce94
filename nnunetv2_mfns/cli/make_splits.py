"""`mfns-make-splits`: the paper's age-stratified folds for a converted dataset.

Reads `subjects.json` from `$nnUNet_raw/DatasetXXX_*`, writes nnU-Net's `splits_final.json` (plus
`mfns_splits.json` with groups, test lists and group statistics) into `$nnUNet_preprocessed/DatasetXXX_*`
(created if needed; nnU-Net's planning/preprocessing keeps an existing `splits_final.json`) and into the
raw folder, and prints the per-group age mean/SD and sex counts.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mfns-make-splits",
        description="Write the paper's age-stratified folds (test = group k, validation = another seeded group, "
                    "training = the rest) as nnU-Net splits_final.json.")
    p.add_argument("-d", "--dataset", required=True, help="dataset id (e.g. 501) or full name (Dataset501_PDPVS)")
    p.add_argument("--seed", type=int, default=0, help="seed for tie-breaks, group order and validation groups (default 0)")
    p.add_argument("--n-groups", type=int, default=5, help="number of age groups = folds (default 5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing splits files")
    return p


def resolve_dataset_dirs(dataset: str) -> tuple[Path, Path]:
    """(raw dataset dir, preprocessed dataset dir) for an id or name, via nnU-Net's own lookup."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        if not os.environ.get(var):
            raise MfnsInputError(f"${var} is not set (nnU-Net's data folders are needed)")
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError) as e:
        raise MfnsInputError(f"-d {dataset}: {str(e).splitlines()[0]}") from None
    raw = Path(os.environ["nnUNet_raw"]) / name
    if not raw.is_dir():
        raise MfnsInputError(f"{raw}: raw dataset folder not found")
    return raw, Path(os.environ["nnUNet_preprocessed"]) / name


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnunetv2_mfns.dataset_conversion.nnunet_raw import load_subjects_json
    from nnunetv2_mfns.dataset_conversion.splits import format_group_table, splits_from_subjects, write_splits
    try:
        raw, pre = resolve_dataset_dirs(args.dataset)
        subjects = load_subjects_json(raw)
        splits = splits_from_subjects(subjects, seed=args.seed, n_groups=args.n_groups,
                                      source=str(raw / "subjects.json"))
        written = write_splits(splits, pre, raw_dataset_dir=raw, overwrite=args.overwrite)
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_group_table(splits))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
