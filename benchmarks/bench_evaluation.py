"""Benchmark: evaluate 20 realistic-size cases (70 x 448 x 384, a few hundred small PVS each) with all metrics.

The masks are FAKE (tests/synthetic_results.py): truth with 200-600 small tubular objects per case
and a fake prediction (dropped objects, dilations, false-positive blobs). Generation is not timed; timed
are `evaluate_folders` (voxel + lesion metrics + HD95, reading the NIfTI files included) with 1 and 2
worker processes, and the rating-slice counts of truth and prediction.

    OMP_NUM_THREADS=1 python benchmarks/bench_evaluation.py [--cases 20] [--shape 70 448 384] [--keep DIR]

With --labels DIR (e.g. the labelsTr of `mfns-make-phantom --profile realistic`), the truth is taken from
that folder instead and only the fake predictions are generated (geometry copied from each label).

Prints one JSON line with the timings. Acceptance (issue 6): all metrics for 20 cases in < 60 s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from nnunetv2_mfns.evaluation.counts import count_folders
from nnunetv2_mfns.evaluation.io import load_subjects
from nnunetv2_mfns.evaluation.metrics import evaluate_folders

# the FAKE result sets are test fixtures (tests/synthetic_results.py), not part of the installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_results import make_fake_result_set  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--shape", type=int, nargs=3, default=(70, 448, 384), help="z y x voxels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, help="write the fake data here and keep it (default: a temporary folder)")
    p.add_argument("--labels", type=Path, help="existing label folder to use as truth (fake predictions only)")
    args = p.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="mfns_bench_eval_"))
    try:
        if args.labels is not None:
            return _bench_existing_labels(args.labels, root, args.seed)
        t0 = time.perf_counter()
        fs = make_fake_result_set(root, n_cases=args.cases, shape=tuple(args.shape), spacing_zyx=(2.0, 0.5, 0.5),
                                  methods={"MfNS_De": (0.12, 0.15, 6.0)}, pvs_per_case=(200, 600), seed=args.seed,
                                  write_images=False)
        t_gen = time.perf_counter() - t0
        res = {"cases": args.cases, "shape_zyx": list(args.shape), "seed": args.seed, "generate_s": round(t_gen, 1),
               "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "python": platform.python_version()}
        for workers in (1, 2):
            t0 = time.perf_counter()
            df = evaluate_folders(fs.gt_dir, fs.pred_dirs, compute_hd95=True, num_workers=workers, progress=False)
            res[f"evaluate_all_metrics_hd95_{workers}proc_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        evaluate_folders(fs.gt_dir, fs.pred_dirs, compute_hd95=False, progress=False)
        res["evaluate_no_hd95_1proc_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        count_folders(load_subjects(fs.subjects_json), fs.dataset_dir, fs.pred_dirs, fs.gt_dir)
        res["counts_truth_and_pred_s"] = round(time.perf_counter() - t0, 2)
        n = df[df["metric"] == "n_true_components"]["value"]
        res["true_components_per_case_min_median_max"] = [int(n.min()), int(n.median()), int(n.max())]
        res["mean_dsc"] = round(float(df[df["metric"] == "dsc"]["value"].mean()), 3)
        print(json.dumps(res))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _bench_existing_labels(labels: Path, root: Path, seed: int) -> int:
    import numpy as np
    import SimpleITK as sitk

    from synthetic_results import fake_prediction
    rng = np.random.default_rng(seed)
    out = root / "predictions" / "MfNS_De"
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(labels.glob("*.nii.gz"))
    t0 = time.perf_counter()
    for f in files:
        img = sitk.ReadImage(str(f))
        gt = sitk.GetArrayFromImage(img).astype(bool)
        pred = sitk.GetImageFromArray(fake_prediction(rng, gt, np.ones_like(gt), 0.12, 0.15, 6.0))
        pred.CopyInformation(img)
        sitk.WriteImage(pred, str(out / f.name), useCompression=True)
    res = {"labels": str(labels), "cases": len(files), "shape_zyx": list(gt.shape), "seed": seed,
           "generate_s": round(time.perf_counter() - t0, 1), "cpu_count": os.cpu_count(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    t0 = time.perf_counter()
    df = evaluate_folders(labels, {"MfNS_De": out}, compute_hd95=True, progress=False)
    res["evaluate_all_metrics_hd95_1proc_s"] = round(time.perf_counter() - t0, 2)
    res["per_case_s"] = round(res["evaluate_all_metrics_hd95_1proc_s"] / max(len(files), 1), 3)
    n = df[df["metric"] == "n_true_components"]["value"]
    res["true_components_per_case_min_median_max"] = [int(n.min()), int(n.median()), int(n.max())]
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
