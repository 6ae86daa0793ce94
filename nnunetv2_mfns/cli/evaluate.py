"""`mfns-evaluate`: voxel and lesion metrics of prediction folders, Table-2 summary and paired statistics.

Writes into --out: metrics.csv (tidy: case, method, fold, metric, value), summary.csv / summary.md
(mean +/- SD per method), stats.csv (fold-level paired tests with Holm vs --reference) and, with --subjects,
the rating-slice counts.csv and correlations.csv. Figures and report.md: `mfns-report`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by mfns-evaluate and mfns-report."""
    p.add_argument("--gt", required=True, type=Path, help="label folder (e.g. DatasetXXX/labelsTr) with <case>.nii.gz")
    # extend: "--pred A=a B=b" and "--pred A=a --pred B=b" both keep every folder (plain nargs would keep the last)
    p.add_argument("--pred", required=True, nargs="+", action="extend", metavar="NAME=DIR",
                   help="nnU-Net prediction folder of each method, e.g. MfNS_De=preds/mfns nnUNet_3d=preds/3d; repeat a "
                        "name to join folders (one per fold: MfNS_De=f0 MfNS_De=f1 ...)")
    p.add_argument("--subjects", type=Path, help="subjects.json (rating slices, region masks, rater counts)")
    p.add_argument("--splits", type=Path,
                   help="mfns_splits.json: fills the fold column (the fold that tested each case) and checks that every "
                        "case in a prediction folder named fold_k is in fold k's test group (refused otherwise)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--reference", default="MfNS_De", help="method the others are tested against (default MfNS_De)")
    p.add_argument("--allow-missing", action="store_true",
                   help="evaluate the cases a prediction folder has and report the missing ones instead of failing")
    p.add_argument("--hd95", action="store_true", help="also compute the 95th-percentile Hausdorff distance (mm)")
    p.add_argument("--connectivity", type=int, default=26, choices=(6, 18, 26),
                   help="3D connectivity of lesion components (default 26)")
    p.add_argument("--lesion-rule", default="one_to_one", choices=("one_to_one", "any_overlap"),
                   help="lesion-wise matching: one_to_one (default; maximum-weight matching on component IoU, merges and "
                        "splits count as errors) or any_overlap (the old touch rule, only to compare with old results)")
    p.add_argument("--min-iou", type=float, default=0.1,
                   help="smallest IoU of a matched true/predicted component pair under one_to_one (default 0.1)")
    p.add_argument("--count-connectivity", type=int, default=8, choices=(4, 8),
                   help="2D connectivity of rating-slice counts (default 8)")
    p.add_argument("--min-size", type=int, default=1, help="smallest counted 2D component in pixels (default 1)")
    p.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples for the CI (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0; written to stats.csv)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes over cases (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files in --out")


def check_common_arguments(args: argparse.Namespace) -> None:
    if args.min_size < 1:
        raise MfnsInputError(f"--min-size: must be >= 1, got {args.min_size}")
    if args.n_boot < 100:
        raise MfnsInputError(f"--n-boot: must be >= 100, got {args.n_boot}")
    if not 0 < args.min_iou <= 1:
        raise MfnsInputError(f"--min-iou: must be in (0, 1], got {args.min_iou}")
    if args.workers < 1:
        raise MfnsInputError(f"--workers: must be >= 1, got {args.workers}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfns-evaluate", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    add_common_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # our own progress messages only; third-party INFO chatter (numexpr, matplotlib) stays hidden
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("nnunetv2_mfns").setLevel(logging.INFO)
    from nnunetv2_mfns.evaluation.counts import count_folders
    from nnunetv2_mfns.evaluation.io import (case_to_fold_from_splits, check_fold_membership, check_out_dir,
                                             load_splits_file, load_subjects, parse_named_dirs, prepare_out_dir)
    from nnunetv2_mfns.evaluation.metrics import check_folders, evaluate_folders
    from nnunetv2_mfns.evaluation.report import COUNT_FILES, METRIC_FILES, write_count_tables, write_metric_tables
    try:
        check_common_arguments(args)
        pred_dirs = parse_named_dirs(args.pred)
        subjects = load_subjects(args.subjects) if args.subjects else None
        case_to_fold = None
        if args.splits:
            splits = load_splits_file(args.splits)
            case_to_fold = case_to_fold_from_splits(splits, str(args.splits))
            check_fold_membership(pred_dirs, splits, str(args.splits))
        check_folders(args.gt, pred_dirs, args.allow_missing)
        produced = METRIC_FILES + (COUNT_FILES if subjects else [])
        check_out_dir(args.out, args.overwrite, produced)
        # everything is computed before --out is created: a refused input (a bad file found mid-way) leaves no folder
        metrics = evaluate_folders(args.gt, pred_dirs, case_to_fold, allow_missing=args.allow_missing,
                                   compute_hd95=args.hd95, connectivity=args.connectivity, num_workers=args.workers,
                                   lesion_rule=args.lesion_rule, min_iou=args.min_iou)
        counts = None
        if subjects is not None:
            counts = count_folders(subjects, args.subjects.parent, pred_dirs, args.gt, args.count_connectivity,
                                   args.min_size, allow_missing=args.allow_missing, cases=sorted(set(metrics["case"])))
        out = prepare_out_dir(args.out, args.overwrite, produced)
        write_metric_tables(out, metrics, args.reference, args.n_boot, args.seed)
        if counts is not None:
            write_count_tables(out, counts)
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for m, miss in metrics.attrs.get("missing", {}).items():
        print(f"missing predictions for {m}: {', '.join(miss)}")
    print((out / "summary.md").read_text().split("\n\n")[1])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
