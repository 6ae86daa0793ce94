"""How saturated are MfNS_De's attention gates after a few Adagrad steps of the paper's recipe?

Issue 10 reports 82% of the CBAM gate values below 0.01 or above 0.99 after three Adagrad steps on a
5-stage net. A saturated sigmoid gate passes (almost) no gradient and multiplies its features by ~0 or
~1, i.e. the attention stops learning and may switch whole channels / regions off. This script measures
the fraction for each network switch so that a fix is judged by a number, not by eye.

Setup (deterministic, seed recorded in the output): a 5-stage 2d plan (features 32..256, strides
[1,1] + 4 x [2,2], instance norm, LeakyReLU, nnU-Net's He init), batch 4 x 1 x 80 x 80 (the demo
phantom's 2d patch and the paper's batch size), synthetic T2w-like images (noise + bright 1-2 pixel
dots and short lines = the label), HF (max) deep-supervision targets, soft Dice at every scale with
weights 1/2^i normalised, Adagrad lr 0.05 (the trainer's recipe). Gates are read by forward hooks on
every ChannelAttention / SpatialAttention module during a forward pass on a fixed evaluation batch.

Usage:
    python benchmarks/attention_saturation.py [--steps 3] [--seed 0] [--variants faithful,rescbam,...]
"""
import argparse
import json
import os
import sys
from typing import Dict, List

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import softmax_helper_dim1

from nnunetv2_mfns.architectures.attention import ChannelAttention, SpatialAttention
from nnunetv2_mfns.architectures.mfns_de import V1_BUILD
from nnunetv2_mfns.architectures.nested_decoder import deep_supervision_layout
from nnunetv2_mfns.transforms.hf_downsampling import DownsampleSegForDSTransformHF

MFNS_CLASS = "nnunetv2_mfns.architectures.mfns_de.MfNSDe"
REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]

# variant name -> extra MfNSDe kwargs
VARIANTS: Dict[str, dict] = {
    "faithful": {},  # the default since issue 22: DNANet's Res-CBAM encoder and nodes, widths 16..256
    "faithful_neutral_init": {"attention_init": "neutral"},
    "v1": dict(V1_BUILD),  # the build issue 10 measured
    "v1_rescbam": {**V1_BUILD, "node_block": "res_cbam"},
    "v1_neutral_init": {**V1_BUILD, "attention_init": "neutral"},
    "v1_rescbam_neutral_init": {**V1_BUILD, "node_block": "res_cbam", "attention_init": "neutral"},
}


def plan_5stage() -> dict:
    n = 5
    return {"n_stages": n, "features_per_stage": [32, 64, 128, 256, 256], "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [[3, 3]] * n, "strides": [[1, 1]] + [[2, 2]] * (n - 1), "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}


def synthetic_batch(gen: torch.Generator, batch: int = 4, size: int = 80):
    """T2w-like slices: smooth background + noise, PVS-like bright dots / short lines, label = the dots."""
    seg = torch.zeros(batch, 1, size, size)
    for b in range(batch):
        n = int(torch.randint(10, 30, (1,), generator=gen))
        for _ in range(n):
            y, x = torch.randint(2, size - 6, (2,), generator=gen).tolist()
            length = int(torch.randint(1, 5, (1,), generator=gen))
            if bool(torch.rand(1, generator=gen) < 0.5):
                seg[b, 0, y:y + length, x] = 1
            else:
                seg[b, 0, y, x:x + length] = 1
    img = 0.3 * torch.randn(batch, 1, size, size, generator=gen) + 1.5 * seg
    img = img + torch.linspace(-0.5, 0.5, size).view(1, 1, 1, size)
    return img, seg


def gate_fraction(net: torch.nn.Module, x: torch.Tensor) -> Dict[str, float]:
    values: List[torch.Tensor] = {"channel": [], "spatial": []}

    def hook(kind):
        def fn(_m, _inp, out):
            values[kind].append(out.detach().flatten())
        return fn

    handles = [m.register_forward_hook(hook("channel" if isinstance(m, ChannelAttention) else "spatial"))
               for m in net.modules() if isinstance(m, (ChannelAttention, SpatialAttention))]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    out = {}
    for kind, vals in values.items():
        v = torch.cat(vals) if vals else torch.empty(0)
        out[f"{kind}_saturated"] = float(((v < 0.01) | (v > 0.99)).float().mean()) if v.numel() else float("nan")
    allv = torch.cat([torch.cat(v) for v in values.values() if v])
    out["all_saturated"] = float(((allv < 0.01) | (allv > 0.99)).float().mean())
    return out


def run(variant: str, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    net = get_network_from_plans(MFNS_CLASS, dict(plan_5stage(), **VARIANTS[variant]), REQ_IMPORT, 1, 2,
                                 allow_init=True, deep_supervision=True)
    net.train()
    # the trainer's layout: scales and loss weights of every deep-supervision output
    scales, weights = deep_supervision_layout(net.ds_strides, net.n_rows, net.n_rows, net.full_resolution_heads)
    ds = DownsampleSegForDSTransformHF(scales, mode="max", labels=[0, 1])
    loss_fn = DeepSupervisionWrapper(MemoryEfficientSoftDiceLoss(batch_dice=True, do_bg=False, smooth=1e-5, ddp=False,
                                                                 apply_nonlin=softmax_helper_dim1), weights)
    opt = torch.optim.Adagrad(net.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(seed)
    x_eval, _ = synthetic_batch(gen)
    record = {"variant": variant, "seed": seed, "steps": steps, "after": {}}
    record["after"][0] = gate_fraction(net, x_eval)
    for step in range(1, steps + 1):
        img, seg = synthetic_batch(gen)
        targets = [torch.stack([ds(segmentation=s)["segmentation"][k] for s in seg]) for k in range(len(scales))]
        opt.zero_grad()
        loss = loss_fn(net(img), targets)
        loss.backward()
        opt.step()
        record["after"][step] = dict(gate_fraction(net, x_eval), loss=float(loss))
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for v in args.variants.split(","):
        rec = run(v, args.steps, args.seed)
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
