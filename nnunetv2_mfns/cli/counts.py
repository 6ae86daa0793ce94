"""`mfns-counts`: PVS counts on the BG/CSO rating slices for the truth, each method and each rater.

Counts = 2D connected components of each mask inside the region mask on the rating slice (indices and
region masks from subjects.json, or indices from --rating-slices); writes counts.csv (per hemisphere
too) and correlations.csv (Spearman rs and p, Bland-Altman bias and limits) into --out.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError, read_json_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfns-counts", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--subjects", required=True, type=Path, help="subjects.json of the dataset")
    p.add_argument("--pred", nargs="*", action="extend", default=[], metavar="NAME=DIR", help="prediction folders (repeat a name to join folders, e.g. one per fold)")
    p.add_argument("--gt", type=Path, help="label folder: also count the ground truth")
    p.add_argument("--dataset-dir", type=Path,
                   help="folder the region_masks paths are relative to (default: the folder of subjects.json)")
    p.add_argument("--rating-slices", type=Path,
                   help="JSON {case: {\"BG\": index, \"CSO\": index}} replacing subjects.json's indices for those cases")
    p.add_argument("--no-auto-slices", action="store_true",
                   help="skip subjects without rating slices instead of finding them automatically from their T2w scan "
                        "(MNI152 registration, ~30 s per subject; default: find them)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--connectivity", type=int, default=8, choices=(4, 8), help="2D connectivity (default 8)")
    p.add_argument("--min-size", type=int, default=1, help="smallest counted component in pixels (default 1)")
    p.add_argument("--allow-missing", action="store_true", help="skip rated cases without a prediction")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files in --out")
    return p


def _load_rating_slices(path: Path) -> dict:
    from nnunetv2_mfns.evaluation.io import check_input_file
    data = read_json_file(check_input_file(path, "rating-slices JSON file"))
    if not isinstance(data, dict) or not all(
            isinstance(v, dict) and all(isinstance(i, int) and not isinstance(i, bool) for i in v.values())
            for v in data.values()):
        raise MfnsInputError(f"{path}: expected {{case: {{region: integer slice index}}}}")
    return data


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # our own progress messages only; third-party INFO chatter (numexpr, matplotlib) stays hidden
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("nnunetv2_mfns").setLevel(logging.INFO)
    from nnunetv2_mfns.evaluation.counts import count_folders
    from nnunetv2_mfns.evaluation.io import check_out_dir, load_subjects, parse_named_dirs, prepare_out_dir
    from nnunetv2_mfns.evaluation.report import COUNT_FILES, write_count_tables
    try:
        if args.min_size < 1:
            raise MfnsInputError(f"--min-size: must be >= 1, got {args.min_size}")
        pred_dirs = parse_named_dirs(args.pred)  # folders are checked when their files are listed
        if args.gt is not None and not args.gt.is_dir():
            raise MfnsInputError(f"{args.gt}: " + ("is a file, expected the label folder" if args.gt.is_file()
                                                   else "label folder not found"))
        subjects = load_subjects(args.subjects)
        overrides = _load_rating_slices(args.rating_slices) if args.rating_slices else None
        check_out_dir(args.out, args.overwrite, COUNT_FILES)
        counts = count_folders(subjects, args.dataset_dir or args.subjects.parent, pred_dirs, args.gt,
                               args.connectivity, args.min_size, allow_missing=args.allow_missing,
                               rating_slices=overrides, auto_slices=not args.no_auto_slices)
        if counts.empty:
            raise MfnsInputError(f"{args.subjects}: no subject has rating slices (and none given with --rating-slices)")
        # --out is created only now that every input has been read: a refused run leaves no folder behind
        out = prepare_out_dir(args.out, args.overwrite, COUNT_FILES)
        corr = write_count_tables(out, counts)
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cols = ["region", "x", "y", "n", "spearman_rs", "spearman_p", "icc_2_1", "rel_error", "bias", "loa_low", "loa_high"]
    print(corr[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out / 'counts.csv'} and {out / 'correlations.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
