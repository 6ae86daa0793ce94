"""Seconds per training iteration of MfNS_De 2d, stock nnU-Net 2d and stock 3d_fullres on a planned phantom.

For choosing a phantom profile (docs/phantom.md, `study` profile): nnU-Net's own trainers, built from the
stock planner's plans (`pipeline_measure.build_trainers`), timed round-robin so that load changes on a
shared machine hit all three alike; one untimed warm-up step each, then `--reps` iterations with data
loading included (`train_step(next(dataloader))`, what nnU-Net's epoch loop does). Weights are untrained.

    mfns-make-phantom -o /tmp/mfns_study/raw -d 502 --name PVSStudy --n-subjects 5 --seed 0 --profile study
    nnUNet_raw=/tmp/mfns_study/raw nnUNet_preprocessed=/tmp/mfns_study/pre nnUNet_results=/tmp/mfns_study/res \\
        nnUNetv2_plan_and_preprocess -d 502 -c 2d 3d_fullres -np 1 1
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nnUNet_n_proc_DA=1 nnUNet_def_n_proc=1 \\
        python benchmarks/bench_study_profile.py --workdir /tmp/mfns_study -d 502 --name PVSStudy --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

KEYS = ("MfNS_De_2d", "nnUNet_2d", "nnUNet_3d_fullres")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True, help="folder with raw/, pre/ (planned) and res/")
    p.add_argument("-d", "--dataset-id", type=int, required=True)
    p.add_argument("--name", required=True, help="dataset name after DatasetXXX_")
    p.add_argument("--reps", type=int, default=3, help="timed iterations per method (default 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.update(nnUNet_raw=str(args.workdir / "raw"), nnUNet_preprocessed=str(args.workdir / "pre"),
                      nnUNet_results=str(args.workdir / "res"))
    import torch

    import pipeline_measure as pm

    torch.manual_seed(args.seed)
    pm.DATASET_ID, pm.DATASET_NAME = args.dataset_id, args.name  # build_trainers reads these
    pm.METHODS = {k: pm.METHODS[k] for k in KEYS}
    trainers = pm.build_trainers(torch.device("cpu"))
    times: dict[str, list[float]] = {k: [] for k in KEYS}
    for k, tr in trainers.items():  # warm-up: allocator, thread pools
        tr.train_step(next(tr.dataloader_train))
    loads = [os.getloadavg()[0]]
    for _ in range(args.reps):
        for k, tr in trainers.items():
            t0 = time.perf_counter()
            tr.train_step(next(tr.dataloader_train))
            times[k].append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
    rows = {k: {"trainer": type(tr).__name__, "configuration": tr.configuration_name, "batch_size": int(tr.batch_size),
                "patch_size": [int(s) for s in tr.configuration_manager.patch_size],
                "s_per_iteration_median": round(statistics.median(times[k]), 2),
                "s_per_iteration_all": [round(t, 2) for t in times[k]]} for k, tr in trainers.items()}
    print(json.dumps({"dataset": f"Dataset{args.dataset_id:03d}_{args.name}", "reps": args.reps,
                      "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                      "load_avg_1min_during": [round(x, 1) for x in loads], "methods": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
