"""`mfns-report`: the full evaluation report (metrics, statistics, counts, Figures 3-6, Bland-Altman, report.md).

Runs everything `mfns-evaluate` and `mfns-counts` do and adds the figures and report.md, which states the
data, folds, seeds and the command line. --provenance adds a JSON object of your own (e.g. the training
commands) to the report.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from nnunetv2_mfns.cli.evaluate import add_common_arguments, check_common_arguments
from nnunetv2_mfns.errors import MfnsInputError, read_json_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfns-report", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    add_common_arguments(p)
    p.add_argument("--dataset-dir", type=Path,
                   help="dataset folder with regions/ and imagesTr/ (default: the folder of --subjects, else of --gt)")
    p.add_argument("--provenance", type=Path, help="JSON object with extra provenance to show (commands, versions)")
    p.add_argument("--no-auto-slices", action="store_true",
                   help="skip subjects without rating slices instead of finding them automatically from their T2w scan")
    return p


def main(argv: list[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw_argv)
    # our own progress messages only; third-party INFO chatter (numexpr, matplotlib) stays hidden
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("nnunetv2_mfns").setLevel(logging.INFO)
    from nnunetv2_mfns import __version__
    from nnunetv2_mfns.evaluation.io import check_input_file, parse_named_dirs
    from nnunetv2_mfns.evaluation.report import build_report
    try:
        check_common_arguments(args)
        pred_dirs = parse_named_dirs(args.pred)
        provenance = {"command": shlex.join(["mfns-report"] + raw_argv), "nnunetv2_mfns version": __version__}
        if args.provenance:
            extra = read_json_file(check_input_file(args.provenance, "provenance JSON file"))
            if not isinstance(extra, dict):
                raise MfnsInputError(f"{args.provenance}: provenance must be a JSON object")
            provenance.update(extra)
        report = build_report(args.out, args.gt, pred_dirs, args.subjects, args.splits, args.reference, provenance,
                              overwrite=args.overwrite, allow_missing=args.allow_missing, compute_hd95=args.hd95,
                              connectivity=args.connectivity, count_connectivity=args.count_connectivity,
                              min_size=args.min_size, n_boot=args.n_boot, seed=args.seed, num_workers=args.workers,
                              dataset_dir=args.dataset_dir, lesion_rule=args.lesion_rule, min_iou=args.min_iou,
                              auto_slices=not args.no_auto_slices)
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
