"""Throughput of `mfns-predict` against stock `nnUNetv2_predict_from_modelfolder`, same model, same scans, one run.

Runs, one after the other on the same CPU: (1) stock nnU-Net (`-npp 1 -nps 1`, sequential like mfns-predict)
on nnU-Net-named links to the scans, (2) `mfns-predict --no-report` (masks only: the pure overhead of the
per-scan, resumable pipeline), (3) `mfns-predict` with rating slices, census and reports. Each command runs
under `/usr/bin/time -v` for its wall time and peak resident memory (largest process). Where the time goes
comes from the per-scan done-markers (`seconds`: read + registration, prediction, census + report).
Writes OUT/summary.md and OUT/runs.json with the command, machine, load, seed and model.

Example: python benchmarks/bench_predict_throughput.py --scans /tmp/rt/rtscans --n 2 \\
    -m /work/study/results/Dataset613_PVSStudy/nnUNetTrainerMfNSDe_long__nnUNetPlans__2d -f 0 \\
    -chk checkpoint_best.pth --disable-tta --workdir /tmp/thr --out docs/results/predict_throughput
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def timed(cmd: list[str], log: Path, env: dict) -> dict:
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout + "\n---stderr---\n" + proc.stderr)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"cmd": " ".join(cmd), "rc": proc.returncode, "wall_s": round(wall, 1),
            "peak_rss_mib": round(int(m.group(1)) / 1024, 1) if m else None, "load1_at_start": round(load0, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scans", type=Path, required=True, help="folder of .nii.gz scans")
    p.add_argument("--n", type=int, default=2, help="first N scans (sorted names)")
    p.add_argument("-m", dest="model", type=Path, required=True, help="nnU-Net training output folder")
    p.add_argument("-f", dest="fold", default="0")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth")
    p.add_argument("--disable-tta", action="store_true")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    scans = sorted(args.scans.glob("*.nii.gz"))[: args.n]
    if not scans:
        raise SystemExit(f"error: {args.scans}: no .nii.gz scan")
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    stock_in = args.workdir / "stock_in"
    stock_in.mkdir(parents=True)
    for s in scans:
        os.symlink(s.resolve(), stock_in / (s.name[:-7] + "_0000.nii.gz"))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1",
           "nnUNet_compile": "false"}
    tta = ["--disable_tta"] if args.disable_tta else []
    runs = {}
    runs["stock nnUNetv2_predict"] = timed(
        [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-i", str(stock_in), "-o", str(args.workdir / "stock"),
         "-m", str(args.model), "-f", args.fold, "-chk", args.checkpoint, "-device", "cpu", "-npp", "1", "-nps", "1"]
        + tta, args.workdir / "stock.log", env)
    model = ["-m", str(args.model), "-f", args.fold, "-chk", args.checkpoint, "-device", "cpu", "-q"] + tta
    runs["mfns-predict --no-report"] = timed(
        [str(BIN / "mfns-predict"), *map(str, scans), "-o", str(args.workdir / "masks_only"), "--no-report"] + model,
        args.workdir / "masks_only.log", env)
    runs["mfns-predict (report)"] = timed(
        [str(BIN / "mfns-predict"), *map(str, scans), "-o", str(args.workdir / "full")] + model,
        args.workdir / "full.log", env)
    parts = {}
    for key, folder in (("mfns-predict --no-report", "masks_only"), ("mfns-predict (report)", "full")):
        docs = [json.loads(f.read_text()) for f in (args.workdir / folder / ".mfns-predict" / "done").glob("*.json")]
        parts[key] = {k: round(float(np.median([d["seconds"][k] for d in docs])), 1)
                      for k in (docs[0]["seconds"] if docs else {})}
    n = len(scans)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_predict_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    import SimpleITK as sitk
    r = sitk.ImageFileReader()
    r.SetFileName(str(scans[0]))
    r.ReadImageInformation()
    stock = runs["stock nnUNetv2_predict"]["wall_s"]
    lines = ["# mfns-predict throughput vs stock nnU-Net (CPU)", "", f"Command: `{command}`", "",
             f"Scans: {n} from `{args.scans}`, first {r.GetSize()} voxels of {tuple(round(s, 2) for s in r.GetSpacing())} mm; "
             f"model `{args.model}` fold {args.fold} `{args.checkpoint}`, TTA {'off' if args.disable_tta else 'on'}; "
             "registration seed 0.",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, shared with other "
             "jobs (1-min load at each start in the table); the runs are back to back, so the ratio is what holds.", "",
             "| run | rc | wall s | scans / hour | ratio to stock | peak RSS MiB | load at start |", "|---|---|---|---|---|---|---|"]
    for k, v in runs.items():
        lines.append(f"| {k} | {v['rc']} | {v['wall_s']} | {3600 * n / v['wall_s']:.1f} | {v['wall_s'] / stock:.2f} | "
                     f"{v['peak_rss_mib']} | {v['load1_at_start']} |")
    lines += ["", "Where the time goes (median seconds per scan, from the done-markers):", ""]
    for k, v in parts.items():
        lines.append(f"- {k}: " + ", ".join(f"{a} {b}" for a, b in v.items()))
    lines.append("")
    (args.out / "summary.md").write_text("\n".join(lines))
    (args.out / "runs.json").write_text(json.dumps({"command": command, "runs": runs, "parts": parts}, indent=1) + "\n")
    print("\n".join(lines))
    return 0 if all(v["rc"] == 0 for v in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
