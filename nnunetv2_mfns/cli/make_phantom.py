"""`mfns-make-phantom`: write the synthetic 3T T2w PVS cohort as an nnU-Net raw dataset."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mfns-make-phantom",
        description="Generate the synthetic T2w perivascular-space cohort (images, PVS labels, rating-slice "
                    "regions, true and simulated rater counts) as nnU-Net raw dataset DatasetXXX_Name.")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="folder that receives DatasetXXX_Name (default: $nnUNet_raw)")
    p.add_argument("-d", "--dataset-id", type=int, default=501, help="nnU-Net dataset id (default 501)")
    p.add_argument("--name", default="PVSPhantom", help="dataset name (letters/digits, default PVSPhantom)")
    p.add_argument("--n-subjects", type=int, default=20, help="number of subjects (default 20, like the paper)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical files (default 0)")
    p.add_argument("--profile", default="demo", choices=["demo", "study", "hard", "realistic"],
                   help="demo: 28x80x80 voxels of 1.75x1.75x2 mm (CPU demo); study: 28x128x112 of 0.9x0.9x2 mm "
                        "(CPU convergence study, slab cropped to the deep brain); hard: 28x128x128 of 0.65x0.65x2 mm "
                        "over the left hemisphere incl. the cortical rim, acquired at 0.9 mm in k-space, annotator-"
                        "style labelsTr plus exact labels_exact/ and confounders/ maps (docs/phantom.md); "
                        "realistic: 75x480x400 of 0.5x0.5x2 mm")
    p.add_argument("--age-min", type=float, default=42.0, help="youngest age (default 42)")
    p.add_argument("--age-max", type=float, default=79.0, help="oldest age (default 79)")
    p.add_argument("--snr", type=float, default=None, help="white-matter SNR of the Rician noise (profile default 40; hard: of a 0.9x0.9x2 mm "
                        "acquired voxel, scaled by the acquired voxel volume)")
    p.add_argument("--n-jobs", type=int, default=1, help="subjects simulated in parallel processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.output
        if out is None:
            raw = os.environ.get("nnUNet_raw")
            if not raw:
                raise MfnsInputError("-o/--output not given and $nnUNet_raw is not set")
            out = Path(raw)
        from nnunetv2_mfns.dataset_conversion.phantom import generate_cohort

        path = generate_cohort(out, n_subjects=args.n_subjects, seed=args.seed, profile=args.profile,
                               dataset_id=args.dataset_id, dataset_name=args.name, overwrite=args.overwrite,
                               n_jobs=args.n_jobs, age_min=args.age_min, age_max=args.age_max, snr=args.snr)
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({args.n_subjects} subjects, profile {args.profile}, seed {args.seed}); "
          f"montage: {path / 'montage.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
