"""Where MfNS_De spends its time (issue 14): per part of the grid and per operator, CPU.

Two views of one training step (forward + backward, loss over every deep-supervision output):
1. per part (forward only, forward hooks timing each module; fused attention reported separately):
   encoder stages, nested nodes by row, fusion (projections + fusion block), heads, and the share of the
   CBAM gates inside the nodes; plus the analytic forward MACs per part (the same 3x3/1x1 conv arithmetic
   for every part), which explains the measured split without timing noise;
2. per operator (forward + backward, ``torch.profiler`` ``key_averages`` by self CPU time).

Usage:
    python benchmarks/profile_network.py --plan typical_2d --size 256 --batch 2 --seed 0 [--out FILE.md]
"""
import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_network import MFNS_CLASS, PLANS, REQ_IMPORT  # noqa: E402

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # noqa: E402

from nnunetv2_mfns.architectures.attention import CBAM  # noqa: E402


def part_of(name: str) -> str:
    """Module name -> grid part."""
    if name.startswith("encoder.stages."):
        return f"encoder row {name.split('.')[2]}"
    if name.startswith("decoder.nodes."):
        return f"nested nodes row {name.split('.')[2]}"
    if name.startswith("decoder.fusion"):
        return "fusion (projections + block)"
    if name.startswith("decoder.seg_layers"):
        return "heads"
    return "other"


def conv_macs(net: nn.Module, size) -> Dict[str, float]:
    """Forward MACs per part (batch 1) from the convs' shapes and the row sizes they run at."""
    macs: Dict[str, float] = defaultdict(float)
    hooks = []

    def hook(name):
        def fn(m, inp, out):
            k = int(np.prod(m.kernel_size)) * (m.in_channels // m.groups)
            macs[part_of(name)] += float(out[0].numel()) * k  # per sample
        return fn
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            hooks.append(m.register_forward_hook(hook(name)))
    with torch.no_grad():
        net(torch.zeros(1, 1, *size))
    for h in hooks:
        h.remove()
    return dict(macs)


def forward_times(net: nn.Module, x: torch.Tensor, reps: int) -> Dict[str, float]:
    """Seconds per forward pass spent in each part's top-level modules (and in CBAM modules)."""
    times: Dict[str, float] = defaultdict(float)
    starts: Dict[str, float] = {}
    hooks = []
    tops = []
    for name, m in net.named_modules():
        parts = name.split(".")
        top = (len(parts) == 3 and parts[0] == "encoder") or (len(parts) == 4 and parts[1] == "nodes") or \
            (len(parts) == 2 and parts[1] in ("fusion",)) or (len(parts) == 3 and parts[1] in ("fusion_proj", "seg_layers"))
        if top or isinstance(m, CBAM):
            key = "  of which CBAM gates" if isinstance(m, CBAM) else part_of(name)
            tops.append((name, m, key))
    for name, m, key in tops:
        hooks.append(m.register_forward_pre_hook(lambda mod, inp, n=name: starts.__setitem__(n, time.perf_counter())))
        hooks.append(m.register_forward_hook(
            lambda mod, inp, out, n=name, k=key: times.__setitem__(k, times[k] + time.perf_counter() - starts[n])))
    with torch.no_grad():
        net(x)  # warm-up
        times.clear()
        t0 = time.perf_counter()
        for _ in range(reps):
            net(x)
        total = (time.perf_counter() - t0) / reps
    for h in hooks:
        h.remove()
    out = {k: v / reps for k, v in times.items()}
    out["total forward"] = total
    return out


def op_table(net: nn.Module, x: torch.Tensor, top: int) -> List[tuple]:
    from torch.profiler import ProfilerActivity, profile
    outs = net(x)  # warm-up
    sum(o.float().mean() for o in outs).backward()
    net.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        outs = net(x)
        sum(o.float().mean() for o in outs).backward()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(((e.key, e.self_cpu_time_total / 1e6, e.count) for e in events), key=lambda r: -r[1])
    return [(k, s, s * 1e6 / total, c) for k, s, c in rows[:top]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--plan", default="typical_2d", choices=sorted(PLANS))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--extra", default="", help="MfNSDe switches as k=v,k=v (e.g. attention_from_row=1)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    extra = {}
    for kv in filter(None, args.extra.split(",")):
        k, v = kv.split("=")
        extra[k] = int(v) if v.isdigit() else v
    desc, kw, _ = PLANS[args.plan]
    net = get_network_from_plans(MFNS_CLASS, dict(kw, **extra), REQ_IMPORT, 1, 2, allow_init=True,
                                 deep_supervision=True)
    size = (args.size, args.size)
    x = torch.randn(args.batch, 1, *size)
    macs = conv_macs(net, size)
    total_macs = sum(macs.values())
    fwd = forward_times(net, x, args.reps)
    net.train()
    ops = op_table(net, x, args.top)
    lines = [f"### Profile: MfNSDe {extra or ''} on {args.plan}, {args.batch} x 1 x {args.size}^2, fp32, 1 thread, "
             f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}", "",
             "| part | conv GMACs (b1) | share of MACs | forward s | share of forward |", "|---|---|---|---|---|"]
    for part in sorted(set(macs) | set(fwd) - {"total forward"}):
        m = macs.get(part, 0.0)
        t = fwd.get(part, float("nan"))
        lines.append(f"| {part} | {m / 1e9:.2f} | {m / total_macs:.0%} | {t:.3f} | {t / fwd['total forward']:.0%} |")
    lines.append(f"| total | {total_macs / 1e9:.2f} | 100% | {fwd['total forward']:.3f} | 100% |")
    lines += ["", f"Top {args.top} operators of one forward + backward by self CPU time:", "",
              "| operator | self CPU s | share | calls |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {s:.3f} | {sh:.0%} | {c} |" for k, s, sh, c in ops]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
