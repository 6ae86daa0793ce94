"""`mfns-convert-pd`: convert a T2w/PVS cohort (BIDS-like tree or CSV manifest) to an nnU-Net raw dataset.

Thin wrapper over `nnunetv2_mfns.dataset_conversion.pd_cohort.convert_pd_cohort`; see
docs/converting_your_cohort.md for the expected input layout and examples.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from nnunetv2_mfns import __version__
from nnunetv2_mfns.errors import MfnsInputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mfns-convert-pd",
        description="Convert a T2w + PVS-mask cohort (BIDS-like tree or CSV manifest) into an nnU-Net v2 raw "
                    "dataset with subjects.json. Every input problem is reported before anything is written.")
    p.add_argument("bids_root", nargs="?", default=None,
                   help="BIDS-like root: sub-*/anat/sub-*_T2w.nii[.gz], participants.tsv, derivatives/<name>/... masks")
    p.add_argument("--manifest", default=None,
                   help="CSV with columns subject,t2w,mask,age[,sex] instead of a BIDS root "
                        "(relative paths are relative to the CSV's folder)")
    p.add_argument("--derivatives-name", default=None,
                   help="derivatives/<NAME> folder holding the masks (default: search all derivatives/*)")
    p.add_argument("--mask-pattern", default=None,
                   help="glob for each subject's mask relative to the BIDS root, with {subject} placeholder, e.g. "
                        "'derivatives/pvs/{subject}/anat/{subject}_desc-PVS_mask.nii.gz'")
    p.add_argument("--dataset-id", type=int, required=True, help="nnU-Net dataset id (1-999)")
    p.add_argument("--dataset-name", default="PDPVS", help="dataset name after DatasetXXX_ (default: PDPVS)")
    p.add_argument("-o", "--output", default=None, help="output folder (default: $nnUNet_raw)")
    p.add_argument("--pvs-values", default=None,
                   help="comma-separated mask values that are PVS, e.g. 1,2 (they become 1; any other non-zero "
                        "value is an error). Without it masks must be binary 0/1")
    p.add_argument("--volume-index", type=int, default=None,
                   help="0-based volume to take from 4D images (4D input is refused without it)")
    p.add_argument("--rater-counts", default=None, help="CSV with columns subject,rater,region(BG|CSO),count")
    p.add_argument("--rating-slices", default=None,
                   help="CSV with columns subject,BG,CSO: 0-based rating-slice indices along the slice axis")
    p.add_argument("--test-scans", default=None,
                   help="folder of unlabeled NIfTI scans, or a glob pattern, written to imagesTs")
    p.add_argument("--exclude-subjects", default=None,
                   help="comma-separated subjects to leave out on purpose (e.g. sub-007,sub-012): dropped from "
                        "every input and recorded in subjects.json. Any other subject that an input names but "
                        "that cannot be converted (e.g. a mask and a participants row but no T2w) is an error")
    p.add_argument("--case-prefix", default="PVS", help="case id prefix, cases are PREFIX_001, ... (default: PVS)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("numexpr").setLevel(logging.WARNING)  # pandas' numexpr start-up chatter is not ours
    # Imported after argument parsing so that --help stays fast.
    from nnunetv2_mfns.dataset_conversion.pd_cohort import convert_pd_cohort
    from nnunetv2_mfns.dataset_conversion.validation import parse_int_list
    try:
        output = args.output or os.environ.get("nnUNet_raw")
        if not output:
            raise MfnsInputError("-o/--output: not given and $nnUNet_raw is not set")
        pvs_values = parse_int_list(args.pvs_values, "--pvs-values") if args.pvs_values is not None else None
        recorded = {k: v for k, v in vars(args).items() if k != "quiet"}
        # Absolute paths and parsed values, so subjects.json says what was actually used.
        for key in ("bids_root", "manifest", "output", "rater_counts", "rating_slices"):
            if recorded[key] is not None:
                recorded[key] = os.path.abspath(recorded[key] if key != "output" else output)
        recorded["output"] = os.path.abspath(output)
        recorded["pvs_values"] = pvs_values
        exclude = sorted({s.strip() for s in (args.exclude_subjects or "").split(",") if s.strip()})
        recorded["exclude_subjects"] = exclude
        created_by = {"tool": "mfns-convert-pd", "version": __version__, "seed": None, "args": recorded}
        target = convert_pd_cohort(
            output, args.dataset_id, args.dataset_name, bids_root=args.bids_root, manifest=args.manifest,
            derivatives_name=args.derivatives_name, mask_pattern=args.mask_pattern, pvs_values=pvs_values,
            volume_index=args.volume_index, rater_counts=args.rater_counts, rating_slices=args.rating_slices,
            test_scans=args.test_scans, exclude_subjects=exclude, overwrite=args.overwrite, case_prefix=args.case_prefix,
            created_by=created_by, show_progress=not args.quiet)
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
