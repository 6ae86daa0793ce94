"""CPU benchmark of the MfNS_De network against nnU-Net's PlainConvUNet built from the same plan.

For each plan (a typical nnU-Net 2d plan of a 0.5 mm in-plane T2w, and a small CPU plan) and each model
(MfNSDe with attention, MfNSDe without attention, PlainConvUNet), all built through nnU-Net's
``get_network_from_plans`` with deep supervision on (as in training), it reports:
- parameter count;
- forward MACs at batch 1 (``torch.utils.flop_counter.FlopCounterMode``, FLOPs / 2);
- forward+backward time of one training step (loss over every output), median of ``--reps`` runs
  after one warm-up run, wall clock and process CPU time; the models are timed round-robin in one
  process so that load changes on the shared machine hit all of them alike;
- peak memory of one forward+backward: peak resident set (``VmHWM``, else ``ru_maxrss``) after minus
  before the step, measured in a fresh subprocess per model (torch allocates outside Python, so
  tracemalloc would not see it).

Usage:
    python benchmarks/bench_network.py --seed 0 --out docs/results/network_benchmark.md [--overwrite]
"""
import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional

logger = logging.getLogger("bench_network")

REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
MFNS_CLASS = "nnunetv2_mfns.architectures.mfns_de.MfNSDe"
PLAIN_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def _plan(n_stages: int, features: List[int], strides: List[List[int]]) -> dict:
    """arch_kwargs as nnU-Net 2.8 writes them into nnUNetPlans.json for a 2d configuration."""
    return {
        "n_stages": n_stages,
        "features_per_stage": features,
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3]] * n_stages,
        "strides": strides,
        "n_conv_per_stage": [2] * n_stages,
        "n_conv_per_stage_decoder": [2] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


# name -> (description, arch_kwargs, benchmark input size)
PLANS: Dict[str, tuple] = {
    "typical_2d": (
        "nnU-Net 2d plan of a 0.5 mm in-plane axial T2w (plan patch ~384x320): 7 stages, features 32..512, "
        "strides [1,1] + 6 x [2,2]; timed at 256x256",
        _plan(7, [32, 64, 128, 256, 512, 512, 512], [[1, 1]] + [[2, 2]] * 6),
        (256, 256),
    ),
    "small_cpu": (
        "small CPU plan (the 2d plan of the 96x96 in-plane CPU test data): 5 stages, features 32..512, "
        "strides [1,1] + 4 x [2,2]; timed at 96x96",
        _plan(5, [32, 64, 128, 256, 512], [[1, 1]] + [[2, 2]] * 4),
        (96, 96),
    ),
}

# name -> (class path, extra kwargs)
# the pre-issue-22 build (mfns_de.V1_BUILD), written out so that this script stays importable without torch
V1 = {"encoder_block": "plain", "node_block": "conv_cbam", "max_features": 256, "resample": "v1",
      "full_resolution_heads": False}
MODELS: Dict[str, tuple] = {
    "MfNSDe": (MFNS_CLASS, {}),  # the faithful (DNANet Res-CBAM) build
    "MfNSDe_noAttention": (MFNS_CLASS, {"use_attention": False}),
    "MfNSDe_V1": (MFNS_CLASS, dict(V1)),
    # network switches of the trainer variants (trainers/variants_network.py), on the v1 build as those trainers
    "MfNSDe_ResCBAM": (MFNS_CLASS, {**V1, "node_block": "res_cbam"}),
    "MfNSDe_coarseAttention": (MFNS_CLASS, {**V1, "attention_from_row": 1}),
    "MfNSDe_fast": (MFNS_CLASS, {**V1, "input_projection": True, "attention_from_row": 1}),
    "MfNSDe_checkpointNodes": (MFNS_CLASS, {"checkpoint_nodes": True}),
    "PlainConvUNet": (PLAIN_CLASS, {}),
}


def build_model(plan_name: str, model_name: str, seed: int, num_classes: int = 2):
    """Builds the model through nnU-Net's get_network_from_plans (deep supervision on, He init)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    cls, extra = MODELS[model_name]
    kwargs = dict(PLANS[plan_name][1], **extra)
    torch.manual_seed(seed)
    return get_network_from_plans(cls, kwargs, REQ_IMPORT, 1, num_classes, allow_init=True, deep_supervision=True)


def make_batch(batch: int, size, seed: int, num_classes: int = 2):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, *size, generator=g)
    y = torch.randint(0, num_classes, (batch, *size), generator=g)
    return x, y


def train_step(net, x, y) -> None:
    """One forward+backward with a cross-entropy over every output (targets nearest-resized per output)."""
    import torch.nn.functional as F

    net.zero_grad(set_to_none=True)
    outs = net(x)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    loss = 0
    for o in outs:
        t = y if o.shape[2:] == y.shape[1:] else \
            F.interpolate(y[:, None].float(), size=o.shape[2:], mode="nearest-exact")[:, 0].long()
        loss = loss + F.cross_entropy(o, t)
    loss.backward()


def _peak_rss_kib() -> int:
    """Peak resident set of this process in KiB.

    Linux's ``ru_maxrss`` is carried over from the parent across fork+exec, so in a child of a large
    benchmark process it would report the parent's peak; ``VmHWM`` belongs to the new address space.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _memory_worker(plan_name: str, model_name: str, seed: int, batch: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    net = build_model(plan_name, model_name, seed)
    x, y = make_batch(batch, _size(plan_name), seed)
    before = _peak_rss_kib()
    train_step(net, x, y)
    after = _peak_rss_kib()
    return {"maxrss_before_kib": before, "maxrss_after_kib": after}


def measure_memory(plan_name: str, model_name: str, seed: int, batch: int, threads: int) -> float:
    """Peak RSS growth (MiB) of one forward+backward, in a fresh interpreter so earlier models do not count."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker", plan_name, model_name,
           "--seed", str(seed), "--batch", str(batch), "--threads", str(threads),
           "--size", str(_SIZE_OVERRIDE.get("size", 0))]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory worker for {plan_name}/{model_name} failed:\n{res.stderr[-2000:]}")
    d = json.loads(res.stdout.strip().splitlines()[-1])
    return (d["maxrss_after_kib"] - d["maxrss_before_kib"]) / 1024


def count_macs(net, size) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 1, *size))
    return fc.get_total_flops() / 2


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), check=False)
        return res.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def benchmark_plan(plan_name: str, seed: int, reps: int, batch: int, threads: int,
                   models: Optional[List[str]] = None) -> List[dict]:
    import torch

    size = _size(plan_name)
    rows = []
    nets = {}
    for model_name in models or list(MODELS):
        net = build_model(plan_name, model_name, seed)
        with torch.no_grad():
            outs = net(torch.zeros(1, 1, *size))
        rows.append({
            "plan": plan_name, "model": model_name,
            "params": sum(p.numel() for p in net.parameters()),
            "n_outputs": len(outs) if isinstance(outs, (list, tuple)) else 1,
            "rows_built": getattr(net, "n_rows", len(net.encoder.stages)),
            "gmacs_fwd_b1": count_macs(net, size) / 1e9,
            "wall": [], "cpu": [],
        })
        nets[model_name] = net
    x, y = make_batch(batch, size, seed)
    for model_name, net in nets.items():  # warm-up (allocator, thread pools), not timed
        train_step(net, x, y)
    for r in range(reps):
        for row in rows:
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(nets[row["model"]], x, y)
            row["wall"].append(time.perf_counter() - t0)
            row["cpu"].append(time.process_time() - c0)
        logger.info("%s: rep %d/%d done", plan_name, r + 1, reps)
    del nets
    for row in rows:
        row["peak_mib"] = measure_memory(plan_name, row["model"], seed, batch, threads)
        logger.info("%s/%s: peak RSS growth %.0f MiB", plan_name, row["model"], row["peak_mib"])
    return rows


# --size overrides the timing size of every plan (e.g. 128 on a loaded machine; MACs scale with the area)
_SIZE_OVERRIDE: Dict[str, int] = {}


def _size(plan_name: str) -> tuple:
    size = PLANS[plan_name][2]
    n = _SIZE_OVERRIDE.get("size")
    return tuple([n] * len(size)) if n else size


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def render_markdown(results: Dict[str, List[dict]], meta: dict) -> str:
    lines = ["# MfNS_De network benchmark (CPU)", "",
             f"- command: `{meta['command']}`",
             f"- machine: {meta['machine']}",
             f"- torch {meta['torch']}, nnunetv2 {meta['nnunetv2']}, Python {meta['python']}, "
             f"torch threads: {meta['threads']}, git commit {meta['commit']}",
             f"- seed: {meta['seed']} (weights and input); batch size {meta['batch']}, fp32, deep supervision on, "
             f"{meta['reps']} timed forward+backward steps per model after one warm-up, models interleaved",
             f"- date (UTC): {meta['date']}; load average at start / end: {meta['load_start']} / {meta['load_end']} "
             "(the 2 cores are shared with other jobs: compare the ratios, which were measured side by side, "
             "rather than absolute times)",
             f"- benchmark runtime: {meta['runtime_s']:.0f} s", "",
             "Peak memory = growth of the process's maximum resident set during one forward+backward "
             "(`VmHWM` of /proc/self/status, fresh subprocess per model; `ru_maxrss` is not used because Linux carries the parent's value over into the child): activations, gradients and workspace, not the weights. "
             "MACs = forward multiply-accumulates at batch 1 (torch FlopCounterMode / 2).", "",
             "MfNSDe runs with its defaults, the faithful build since issue 22 (`max_nested_stages=5`, DNANet's "
             "Res-CBAM encoder and nodes, widths min(plan, 16..256), DNANet's full-resolution side heads plus one "
             "head per coarse row); MfNSDe_V1 is the pre-issue-22 build (plain encoder, conv -> CBAM nodes, widths "
             "capped at 256, one output per row). PlainConvUNet builds the whole plan and has n_stages - 1 outputs.",
             ""]
    for plan_name, rows in results.items():
        desc, kwargs, size = PLANS[plan_name]
        plain = next(r for r in rows if r["model"] == "PlainConvUNet")
        p_wall, p_cpu = statistics.median(plain["wall"]), statistics.median(plain["cpu"])
        if _SIZE_OVERRIDE.get("size"):
            desc += f" (this run: timed at {'x'.join(map(str, _size(plan_name)))} instead, --size)"
        lines += [f"## {plan_name}", "", desc + ".", "",
                  "| model | rows built | DS outputs | params (M) | params / plain | fwd GMACs (b1) | "
                  "fwd+bwd wall median (min-max) s | wall / plain | fwd+bwd CPU median s | CPU / plain | "
                  "peak RSS growth MiB | memory / plain |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
            lines.append(
                f"| {r['model']} | {r['rows_built']} | {r['n_outputs']} | {r['params'] / 1e6:.2f} | "
                f"{r['params'] / plain['params']:.2f} | {r['gmacs_fwd_b1']:.1f} | "
                f"{wall:.2f} ({min(r['wall']):.2f}-{max(r['wall']):.2f}) | {wall / p_wall:.2f} | {cpu:.2f} | "
                f"{cpu / p_cpu:.2f} | {r['peak_mib']:.0f} | {_ratio(r['peak_mib'], plain['peak_mib'])} |")
        lines += ["", "<details><summary>arch_kwargs</summary>", "", "```json", json.dumps(kwargs), "```", "",
                  "</details>", ""]
    return "\n".join(lines) + "\n"


def run_benchmark(seed: int, reps: int, batch: int, threads: int, command: str,
                  plans: Optional[List[str]] = None, models: Optional[List[str]] = None) -> str:
    """Runs every plan x model and returns the Markdown report."""
    import nnunetv2  # noqa: F401  (version only)
    import torch
    from importlib.metadata import version

    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    load_start = "%.2f %.2f %.2f" % os.getloadavg()
    results = {}
    for plan_name in plans or list(PLANS):
        logger.info("plan %s", plan_name)
        results[plan_name] = benchmark_plan(plan_name, seed, reps, batch, threads, models)
    meta = {
        "command": command,
        "machine": f"{_cpu_name()}, {os.cpu_count()} logical CPUs (shared 2-core box), no GPU used",
        "torch": torch.__version__, "nnunetv2": version("nnunetv2"), "python": platform.python_version(),
        "threads": threads, "commit": _git_commit(), "seed": seed, "batch": batch, "reps": reps,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "load_start": load_start, "load_end": "%.2f %.2f %.2f" % os.getloadavg(),
        "runtime_s": time.perf_counter() - t_start,
    }
    return render_markdown(results, meta)


def main(argv: Optional[List[str]] = None) -> int:
    from nnunetv2_mfns.errors import MfnsInputError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and input (default 0)")
    parser.add_argument("--out", default="docs/results/network_benchmark.md", help="Markdown file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--reps", type=int, default=3, help="timed steps per model (default 3; keeps the run < 5 min on the shared 2-core box)")
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared machine)")
    parser.add_argument("--plans", default=",".join(PLANS), help="comma-separated plans (default: all)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated models (default: all; PlainConvUNet is always added as the reference)")
    parser.add_argument("--size", type=int, default=0,
                        help="time every plan at size^dim instead of its own size (0: the plan's; passed to workers)")
    parser.add_argument("--memory-worker", nargs=2, metavar=("PLAN", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size:
        _SIZE_OVERRIDE["size"] = args.size
    try:
        if args.reps < 1:
            raise MfnsInputError(f"--reps must be >= 1, got {args.reps}")
        if args.batch < 1:
            raise MfnsInputError(f"--batch must be >= 1, got {args.batch}")
        if args.threads < 1:
            raise MfnsInputError(f"--threads must be >= 1, got {args.threads}")
        if args.memory_worker:
            plan_name, model_name = args.memory_worker
            if plan_name not in PLANS or model_name not in MODELS:
                raise MfnsInputError(f"--memory-worker: unknown plan/model {plan_name}/{model_name}")
            print(json.dumps(_memory_worker(plan_name, model_name, args.seed, args.batch, args.threads)))
            return 0
        plans = [p for p in args.plans.split(",") if p]
        models = [m for m in args.models.split(",") if m]
        unknown = [p for p in plans if p not in PLANS] + [m for m in models if m not in MODELS]
        if unknown:
            raise MfnsInputError(f"unknown plan/model {unknown}; plans: {sorted(PLANS)}, models: {sorted(MODELS)}")
        if "PlainConvUNet" not in models:
            models.append("PlainConvUNet")
        out = os.path.abspath(args.out)
        if os.path.exists(out) and not args.overwrite:
            raise MfnsInputError(f"--out {args.out} exists; pass --overwrite to replace it")
        if not os.path.isdir(os.path.dirname(out)):
            raise MfnsInputError(f"--out {args.out}: folder {os.path.dirname(out)} does not exist")
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = "python benchmarks/bench_network.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = run_benchmark(args.seed, args.reps, args.batch, args.threads, command, plans, models)
    with open(out, "w") as f:
        f.write(md)
    print(md)
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
