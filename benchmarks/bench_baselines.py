"""CPU cost of the paper's baselines (TriSegNet, IAANet, plain U-Net) against MfNS_De on one plan, one run.

Every network is built through nnU-Net's ``get_network_from_plans`` from the same 2d arch_kwargs (nnU-Net's
typical 7-stage 2d plan, deep supervision on, as in training) and reports:
- parameter count (from the network itself) and forward MACs at batch 1 (FlopCounterMode FLOPs / 2);
- forward+backward wall and CPU time of one training step (cross-entropy over every output), median of
  ``--reps`` steps after one warm-up step, the networks timed round-robin in one process so that load
  changes on the shared machine hit all of them alike; the headline is each network's ratio to MfNS_De.
IAANet is included when ``nnunetv2_mfns.architectures.iaanet`` is importable at the measured commit.

Usage:
    python benchmarks/bench_baselines.py --seed 0 --out docs/results/baselines_benchmark --overwrite
(writes ``<out>.md`` and ``<out>.json``).
"""
import argparse
import importlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_network import REQ_IMPORT, _cpu_name, _git_commit, _plan, count_macs, make_batch, train_step  # noqa: E402

logger = logging.getLogger("bench_baselines")

PLAN = _plan(7, [32, 64, 128, 256, 512, 512, 512], [[1, 1]] + [[2, 2]] * 6)
PLAN_DESC = ("nnU-Net 2d plan of a 0.5 mm in-plane axial T2w (plan patch ~384x320): 7 stages, features 32..512, "
             "strides [1,1] + 6 x [2,2]")

# name -> (module, class name, extra kwargs, what it is); the first entry is the reference
MODELS: Dict[str, tuple] = {
    "MfNS_De": ("nnunetv2_mfns.architectures.mfns_de", "MfNSDe", {}, "the paper's network, defaults"),
    "TriSegNet": ("nnunetv2_mfns.architectures.trisegnet", "TriSegNet", {}, "2D TriSegNet, defaults"),
    "IAANet": ("nnunetv2_mfns.architectures.iaanet", "IAANet", {}, "2D IAANet, defaults"),
    "U-Net (PlainConvUNet)": ("dynamic_network_architectures.architectures.unet", "PlainConvUNet", {},
                              "nnU-Net's 2d U-Net, the paper's U-Net baseline network"),
}
REFERENCE = "MfNS_De"


def available_models() -> Dict[str, Optional[str]]:
    """name -> dotted class path, or None where the module is not in this checkout (reported, not hidden)."""
    out = {}
    for name, (module, cls, _, _) in MODELS.items():
        try:
            getattr(importlib.import_module(module), cls)
            out[name] = f"{module}.{cls}"
        except (ImportError, AttributeError) as e:
            logger.warning("%s not available: %s", name, e)
            out[name] = None
    return out


def source_state(module: str) -> str:
    """'committed' when the module's file equals the measured commit, else 'uncommitted changes' (a benchmark
    measures the working tree, and other people edit it concurrently)."""
    import subprocess

    path = importlib.import_module(module).__file__
    res = subprocess.run(["git", "status", "--porcelain", "--", path], capture_output=True, text=True,
                         cwd=os.path.dirname(path), check=False)
    if res.returncode != 0:
        return "unknown (not a git checkout)"
    return "committed" if not res.stdout.strip() else "uncommitted changes"


def build(class_path: str, extra: dict, seed: int):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    torch.manual_seed(seed)
    return get_network_from_plans(class_path, dict(PLAN, **extra), REQ_IMPORT, 1, 2, allow_init=True,
                                  deep_supervision=True)


def run(seed: int, reps: int, batch: int, size: List[int], threads: int, command: str) -> dict:
    import torch
    from importlib.metadata import version

    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    paths = available_models()
    nets, rows = {}, {}
    for name, path in paths.items():
        if path is None:
            rows[name] = {"available": False}
            continue
        net = build(path, MODELS[name][2], seed)
        with torch.no_grad():
            outs = net(torch.zeros(1, 1, *size))
        rows[name] = {"available": True, "class": path, "what": MODELS[name][3],
                      "source": source_state(MODELS[name][0]),
                      "params": int(sum(p.numel() for p in net.parameters())),
                      "n_outputs": len(outs) if isinstance(outs, (list, tuple)) else 1,
                      "gmacs_fwd_b1": count_macs(net, size) / 1e9, "wall_s": [], "cpu_s": []}
        nets[name] = net
    x, y = make_batch(batch, size, seed)
    for net in nets.values():  # warm-up: allocator and thread pools, not timed
        train_step(net, x, y)
    for r in range(reps):
        for name, net in nets.items():
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(net, x, y)
            rows[name]["wall_s"].append(time.perf_counter() - t0)
            rows[name]["cpu_s"].append(time.process_time() - c0)
        logger.info("rep %d/%d done", r + 1, reps)
    ref = rows[REFERENCE]
    for row in rows.values():
        if not row["available"]:
            continue
        row["wall_median_s"] = statistics.median(row["wall_s"])
        row["cpu_median_s"] = statistics.median(row["cpu_s"])
        row["params_ratio_vs_MfNS_De"] = row["params"] / ref["params"]
        row["gmacs_ratio_vs_MfNS_De"] = row["gmacs_fwd_b1"] / ref["gmacs_fwd_b1"]
        row["wall_ratio_vs_MfNS_De"] = row["wall_median_s"] / statistics.median(ref["wall_s"])
        row["cpu_ratio_vs_MfNS_De"] = row["cpu_median_s"] / statistics.median(ref["cpu_s"])
    return {
        "command": command, "plan": PLAN_DESC, "arch_kwargs": PLAN, "input_size": list(size), "batch": batch,
        "reps": reps, "seed": seed, "threads": threads,
        "machine": f"{_cpu_name()}, {os.cpu_count()} logical CPUs, CPU only",
        "torch": torch.__version__, "nnunetv2": version("nnunetv2"), "python": platform.python_version(),
        "commit": _git_commit(), "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
        "runtime_s": time.perf_counter() - t_start, "models": rows,
    }


def render_markdown(res: dict) -> str:
    f3 = lambda v: " ".join(f"{a:.2f}" for a in v)  # noqa: E731
    lines = ["# Baselines against MfNS_De: size and CPU training-step cost (one run, same plan)", "",
             f"- command: `{res['command']}`", f"- machine: {res['machine']}; torch threads {res['threads']}",
             f"- torch {res['torch']}, nnunetv2 {res['nnunetv2']}, Python {res['python']}, git commit {res['commit']}",
             f"- plan: {res['plan']}; input {res['input_size'][0]}x{res['input_size'][1]}, batch {res['batch']}, "
             f"fp32, deep supervision on, seed {res['seed']}; {res['reps']} timed forward+backward steps per "
             "network after one warm-up, networks interleaved",
             f"- date (UTC) {res['date_utc']}; load average at start / end: {f3(res['loadavg_start'])} / "
             f"{f3(res['loadavg_end'])} (shared machine: read the ratios, measured side by side, not the "
             f"absolute times); runtime {res['runtime_s']:.0f} s", "",
             "| network | DS outputs | params (M) | params / MfNS_De | fwd GMACs (b1) | GMACs / MfNS_De | "
             "fwd+bwd wall median (min-max) s | wall / MfNS_De | CPU median s | CPU / MfNS_De |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["models"].items():
        if not r["available"]:
            lines.append(f"| {name} | not in this checkout at commit {res['commit']} | | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['n_outputs']} | {r['params'] / 1e6:.2f} | {r['params_ratio_vs_MfNS_De']:.2f} | "
            f"{r['gmacs_fwd_b1']:.1f} | {r['gmacs_ratio_vs_MfNS_De']:.2f} | {r['wall_median_s']:.2f} "
            f"({min(r['wall_s']):.2f}-{max(r['wall_s']):.2f}) | {r['wall_ratio_vs_MfNS_De']:.2f} | "
            f"{r['cpu_median_s']:.2f} | {r['cpu_ratio_vs_MfNS_De']:.2f} |")
    lines += ["", "Classes: " + ", ".join(f"{n}: `{r['class']}` ({r['what']}; source {r['source']})"
                                         for n, r in res["models"].items()
                                         if r["available"]) + ".", ""]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and input (default 0)")
    parser.add_argument("--out", default="docs/results/baselines_benchmark",
                        help="output stem: writes <out>.md and <out>.json")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--reps", type=int, default=3, help="timed steps per network (default 3)")
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256], help="input size (default 256 256)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared machine)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    md, js = args.out + ".md", args.out + ".json"
    for p in (md, js):
        if os.path.exists(p) and not args.overwrite:
            print(f"error: {p} exists (use --overwrite)", file=sys.stderr)
            return 2
    command = "python benchmarks/bench_baselines.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res = run(args.seed, args.reps, args.batch, args.size, args.threads, command)
    os.makedirs(os.path.dirname(os.path.abspath(md)), exist_ok=True)
    with open(js, "w") as f:
        json.dump(res, f, indent=1)
    with open(md, "w") as f:
        f.write(render_markdown(res))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
