"""Validates the automatic rating slices and regions against a phantom's truth (issue 13 acceptance).

For every case of a phantom dataset (subjects.json with `rating_slices`, regions/<case>_{BG,CSO}.nii.gz):
runs `locate_rating_slices` on imagesTr/<case>_0000.nii.gz and compares the BG/CSO slice indices
(criterion: within +/-1 slice for >= 90% of subjects) and the BG/CSO region masks (Dice >= 0.7).

Resumable: one JSON per case in OUT/cases/ (an existing one is reused); the table (per_subject.csv) and
summary.md are rebuilt from them at the end. Example (the committed result):
    mfns-make-phantom -o /tmp/mfns_realistic20 --profile realistic --n-subjects 20 --seed 0
    python benchmarks/validate_rating_slices.py /tmp/mfns_realistic20/Dataset501_PVSPhantom \
        --out docs/results/auto_rating_slices --seed 0
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nnunetv2_mfns.errors import MfnsInputError, read_json_file
from nnunetv2_mfns.evaluation.rating_slices import locate_rating_slices
from nnunetv2_mfns.image_checks import read_checked

logger = logging.getLogger("validate_rating_slices")
TOL_SLICES = 1
MIN_SLICE_RATE = 0.9
MIN_DICE = 0.7


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = float(a.sum() + b.sum())
    return 2.0 * float((a & b).sum()) / s if s else 1.0


def run_case(dataset: Path, case: str, entry: dict, seed: int, deformable: bool) -> dict:
    img_path = dataset / "imagesTr" / f"{case}_0000.nii.gz"
    if not img_path.is_file():
        img_path = dataset / "imagesTs" / f"{case}_0000.nii.gz"
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    res = locate_rating_slices(img_path, seed=seed, deformable=deformable, source=case)
    seconds = time.perf_counter() - t0
    row = {"case": case, "true_BG": entry["rating_slices"]["BG"], "true_CSO": entry["rating_slices"]["CSO"],
           "auto_BG": res.bg_slice, "auto_CSO": res.cso_slice, "ventricle_top": res.ventricle_top_slice}
    for r in ("BG", "CSO"):
        truth = read_checked(dataset / entry["region_masks"][r], f"region mask {r}", "region").array
        row[f"dice_{r}"] = round(dice(res.regions[r], truth), 4)
        row[f"err_{r}"] = row[f"auto_{r}"] - row[f"true_{r}"]
    row.update({"ncc": res.registration["ncc_after"], "mi_before": res.registration["mattes_mi_before"],
                "mi_after": res.registration["mattes_mi_after"], "registration_s": res.registration["seconds"],
                "total_s": round(seconds, 2), "load1_at_start": round(load0, 2)})
    return row


def summarise(df: pd.DataFrame, args: argparse.Namespace, command: str) -> str:
    n = len(df)
    lines = ["# Automatic rating slices and regions vs phantom truth", "",
             f"Command: `{command}`", "",
             f"Dataset: `{args.dataset}` ({n} subjects); registration seed {args.seed}; "
             f"transform {'affine + B-spline' if args.deformable else 'affine'}.",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, shared with other "
             "jobs (the 1-min load average at each case's start is in the table).", "",
             "| criterion | result | required | holds |", "|---|---|---|---|"]
    ok_all = True
    for r in ("BG", "CSO"):
        rate = float((df[f"err_{r}"].abs() <= TOL_SLICES).mean())
        ok = rate >= MIN_SLICE_RATE
        ok_all &= ok
        lines.append(f"| {r} slice within +/-{TOL_SLICES} | {rate:.0%} ({int((df[f'err_{r}'].abs() <= TOL_SLICES).sum())}/{n}) "
                     f"| >= {MIN_SLICE_RATE:.0%} | {'yes' if ok else 'NO'} |")
    for r in ("BG", "CSO"):
        d = df[f"dice_{r}"].fillna(0.0)
        ok = bool((d >= MIN_DICE).all())
        ok_all &= ok
        lines.append(f"| {r} region Dice (min / median) | {d.min():.3f} / {d.median():.3f} | >= {MIN_DICE} every subject "
                     f"| {'yes' if ok else 'NO'} |")
    lines += ["", f"All criteria hold: **{'yes' if ok_all else 'no'}**.", "",
              "Slice errors (auto - true), counts: " + "; ".join(
                  f"{r}: " + ", ".join(f"{int(k):+d}: {int(v)}" for k, v in df[f'err_{r}'].value_counts().sort_index().items())
                  for r in ("BG", "CSO")),
              "",
              f"Registration time per subject: median {df['registration_s'].median():.1f} s, max {df['registration_s'].max():.1f} s "
              f"(whole call incl. reading: median {df['total_s'].median():.1f} s) at a median 1-min load of "
              f"{df['load1_at_start'].median():.1f} on {os.cpu_count()} cores.",
              "", "Per-subject table: [per_subject.csv](per_subject.csv).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path, help="phantom dataset folder (with subjects.json)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deformable", action="store_true")
    p.add_argument("--cases", nargs="*", help="only these cases")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    command = "python benchmarks/validate_rating_slices.py " + " ".join(argv if argv is not None else sys.argv[1:])
    subjects = read_json_file(args.dataset / "subjects.json")["subjects"]
    cases = sorted(c for c, e in subjects.items() if e.get("rating_slices") and e.get("region_masks"))
    if args.cases:
        cases = [c for c in cases if c in set(args.cases)]
    if not cases:
        raise SystemExit(f"error: {args.dataset}: no case with rating slices and region masks")
    case_dir = args.out / "cases"
    case_dir.mkdir(parents=True, exist_ok=True)
    for case in cases:
        f = case_dir / f"{case}.json"
        if f.is_file():
            continue
        try:
            row = run_case(args.dataset, case, subjects[case], args.seed, args.deformable)
        except MfnsInputError as e:  # a failure is a result: recorded, counted as a miss
            row = {"case": case, "error": str(e)}
        f.write_text(json.dumps(row, indent=1) + "\n")
        logger.info("%s", row)
    rows = [json.loads((case_dir / f"{c}.json").read_text()) for c in cases if (case_dir / f"{c}.json").is_file()]
    df = pd.DataFrame(rows)
    if "error" in df:  # a failed subject stays in the table and counts as a miss (NaN errors, Dice 0)
        for _, r in df[df["error"].notna()].iterrows():
            logger.warning("%s failed: %s", r["case"], r["error"])
        for r in ("BG", "CSO"):
            df[f"dice_{r}"] = df[f"dice_{r}"].fillna(0.0)
    df.to_csv(args.out / "per_subject.csv", index=False)
    (args.out / "summary.md").write_text(summarise(df, args, command))
    print((args.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
