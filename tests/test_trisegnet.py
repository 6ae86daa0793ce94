"""Tests of the 2D TriSegNet baseline (nnunetv2_mfns.architectures.trisegnet). CPU only, tiny plans."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from torch import nn

from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import softmax_helper_dim1

from nnunetv2_mfns.architectures.trisegnet import TriSegNet, trisegnet_deep_supervision_scales
from nnunetv2_mfns.architectures.trisegnet_blocks import InceptionBlock, PlanOps

torch.set_num_threads(1)

CLASS_PATH = "nnunetv2_mfns.architectures.trisegnet.TriSegNet"
REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
ANISO_7 = [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 1], [1, 2]]


def plan_kwargs(strides, features, **overrides) -> dict:
    """nnU-Net-style 2d arch_kwargs (dotted strings, as in nnUNetPlans.json)."""
    n = len(strides)
    kw = {
        "n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3]] * n, "strides": [list(s) for s in strides], "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    kw.update(overrides)
    return kw


def build(kw: dict, in_ch: int, n_cls: int, ds: bool = True, seed: int = 0) -> TriSegNet:
    torch.manual_seed(seed)
    return get_network_from_plans(CLASS_PATH, kw, REQ_IMPORT, in_ch, n_cls, allow_init=True, deep_supervision=ds)


# (name, strides, features, patch, input channels, classes, extra kwargs)
CASES = [
    ("aniso7_odd", ANISO_7, [8, 12, 16, 16, 16, 16, 16], (37, 50), 1, 2, {}),
    ("3ch_3cls_aniso", [[1, 1], [2, 1], [2, 2], [1, 2], [2, 2]], [4, 8, 12, 16, 16], (64, 47), 3, 3, {}),
    ("3stage_odd_asym", [[1, 1], [2, 2], [2, 2]], [4, 8, 10], (29, 31), 1, 3, {"factorisation": "asymmetric"}),
    ("2stage", [[1, 1], [2, 2]], [4, 8], (15, 22), 3, 2, {}),
    ("6stage_max5", [[1, 1]] + [[2, 2]] * 5, [4, 8, 8, 12, 12, 12], (66, 40), 1, 2, {"max_stages": 5}),
]


@pytest.mark.parametrize("name,strides,features,patch,in_ch,n_cls,extra", CASES, ids=[c[0] for c in CASES])
def test_output_shapes_match_nnunet_ds_targets(name, strides, features, patch, in_ch, n_cls, extra):
    net = build(plan_kwargs(strides, features, **extra), in_ch, n_cls, ds=True)
    n_levels = min(len(strides), extra.get("max_stages", 4))
    assert net.n_levels == n_levels
    expected_scales = [list(r) for r in 1 / np.cumprod(np.vstack(strides), axis=0)][:n_levels]
    assert net.get_deep_supervision_scales() == expected_scales
    assert trisegnet_deep_supervision_scales(strides, max_stages=extra.get("max_stages", 4)) == expected_scales

    seg = torch.zeros((1, *patch), dtype=torch.int16)
    targets = DownsampleSegForDSTransform(expected_scales)(segmentation=seg)["segmentation"]
    x = torch.randn(2, in_ch, *patch)
    with torch.no_grad():
        outs = net(x)
    assert isinstance(outs, list) and len(outs) == n_levels == len(targets)
    for o, t in zip(outs, targets):
        assert tuple(o.shape) == (2, n_cls, *t.shape[1:])
        assert torch.all(torch.isfinite(o))

    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    with torch.no_grad():
        single = net(x)
    assert isinstance(single, torch.Tensor) and tuple(single.shape) == (2, n_cls, *patch)
    assert torch.equal(single, outs[0])


def test_wiring_reproduces_original_widths_on_nnunet_plan_prefix():
    # nnU-Net's 2d plan starts 32-64-128-256: the original's widths; a 7-stage plan builds 4 levels
    net = build(plan_kwargs([[1, 1]] + [[2, 2]] * 6, [32, 64, 128, 256, 512, 512, 512]), 1, 2)
    enc, dec = net.encoder, net.decoder
    assert net.widths == [32, 64, 128, 256] and len(enc.spatial) == len(enc.context) == 3
    assert dec.fuse_deep.conv.in_channels == 512 and dec.fuse_deep.conv.out_channels == 128
    assert [m.conv.in_channels for m in dec.fuse] == [128, 192]  # levels 1, 2: cat(S, near[, far])
    assert [(m.conv.in_channels, m.conv.out_channels) for m in dec.near] == [(64, 32), (128, 64)]
    assert [(m.conv.in_channels, m.conv.out_channels) for m in dec.far] == [(128, 32)]
    assert dec.refine.conv.in_channels == 32 and [h.in_channels for h in dec.seg_layers] == [32, 32, 64, 128]
    # Xception repeats: 3 at level 1, 2 + 3 below
    assert len(enc.context[0].rep) == 3 and len(enc.context[1][0].rep) == 2 + 2 and len(enc.context[1][1].rep) == 3


def test_all_parameters_receive_gradient():
    # conv_bias False: a conv bias directly followed by instance norm has an (analytically) zero gradient
    net = build(plan_kwargs(ANISO_7[:5], [4, 8, 8, 12, 12], conv_bias=False), 1, 2)
    net.train()
    g = torch.Generator().manual_seed(1)
    outs = net(torch.randn(2, 1, 35, 33, generator=g))
    loss = sum(nn.functional.cross_entropy(o, torch.randint(0, 2, (o.shape[0], *o.shape[2:]), generator=g))
               for o in outs)
    loss.backward()
    zero = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert zero == []


def test_overfit_fixed_batch_lowers_dice_loss():
    """The shared recipe's loss (soft Dice at every DS scale) on one fixed batch with Adagrad 0.05."""
    strides = [[1, 1], [2, 2], [2, 2], [2, 2]]
    net = build(plan_kwargs(strides, [8, 16, 16, 16]), 1, 2, seed=0)
    g = torch.Generator().manual_seed(2)
    seg = torch.zeros((2, 1, 32, 32), dtype=torch.int16)
    seg[:, :, 10:13, 5:25] = 1  # thin bright tubes, PVS-like
    seg[1, :, 20:30, 18:20] = 1
    x = torch.randn(2, 1, 32, 32, generator=g) * 0.3 + 2.0 * seg.float()
    scales = net.get_deep_supervision_scales()
    targets = [t.long() for t in DownsampleSegForDSTransform(scales)(segmentation=seg[:, 0])["segmentation"]]
    targets = [t[:, None] for t in targets]
    weights = np.array([1 / 2 ** i for i in range(len(scales))])
    loss_fn = DeepSupervisionWrapper(MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=False,
                                                                 do_bg=False, smooth=1e-5), weights / weights.sum())
    opt = torch.optim.Adagrad(net.parameters(), lr=0.05)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = loss_fn(net(x), targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.all(np.isfinite(losses))
    # soft Dice with do_bg=False starts near -2*|fg|/(|fg|+|p|) ~ -0.1 (random probabilities); overfitting
    # drives it towards -1
    assert losses[-1] < losses[0] - 0.5, losses  # measured: -0.11 -> -0.97 in 25 steps (seeds 0, 2)


def test_strict_weight_loading_into_inference_network():
    kw = plan_kwargs(ANISO_7, [8, 12, 16, 16, 16, 16, 16])
    train_net = build(kw, 1, 3, ds=True, seed=0)
    infer_net = build(kw, 1, 3, ds=False, seed=1)
    assert infer_net.decoder.deep_supervision is False
    infer_net.load_state_dict(train_net.state_dict(), strict=True)
    train_net.eval(), infer_net.eval()
    x = torch.randn(1, 1, 40, 36)
    with torch.no_grad():
        assert torch.equal(infer_net(x), train_net(x)[0])


def test_he_init_deterministic_and_key_attributes():
    kw = plan_kwargs(ANISO_7, [8, 16, 32, 64, 64, 64, 64])
    net = build(kw, 3, 2, ds=False, seed=0)
    assert type(net) is TriSegNet
    stem = net.get_submodule(net.keys_to_in_proj[0])
    assert isinstance(stem, nn.Conv2d) and stem.in_channels == 3
    assert net.get_submodule(net.key_to_encoder) is net.encoder
    conv = net.decoder.fuse[0].conv
    expected_std = np.sqrt(2 / (1 + 1e-4) / conv.weight[0].numel())
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.1
    assert torch.all(conv.bias == 0)
    again = build(kw, 3, 2, ds=False, seed=0)
    for (n1, p1), (n2, p2) in zip(net.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_feature_map_size_counts_every_conv_output():
    net = build(plan_kwargs([[1, 1], [2, 2], [2, 2], [2, 2]], [4, 8, 8, 8]), 1, 2, ds=True)
    small = net.compute_conv_feature_map_size((32, 32))
    assert small > 0
    # every map but the 1x1 squeeze-excitation ones scales with the area
    assert 3.9 * small < net.compute_conv_feature_map_size((64, 64)) <= 4 * small
    counted = []
    hooks = [m.register_forward_hook(lambda mod, i, o: counted.append(o[0].numel()))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 1, 32, 32))
    for h in hooks:
        h.remove()
    assert small == sum(counted)
    assert all(p.device.type == "cpu" for p in net.parameters())  # the meta pass left the weights alone


def test_slice_factorisation_is_the_3d_block_on_one_slice():
    """(k,k,1) -> (1,1,k) on a one-slice volume equals k x k -> 1 x 1 with the centre taps (docstring claim)."""
    torch.manual_seed(3)
    ops = PlanOps(nn.Conv2d, True, nn.InstanceNorm2d, {"affine": True}, None, None, nn.LeakyReLU, {}, False)
    block = InceptionBlock(ops, 8, "slice").eval()
    branch2d = block.branches[3]  # 1x1 -> 7x7 -> 1x1
    b3 = [ConvDropoutNormReLU(nn.Conv3d, 8, 2, (1, 1, 1), 1, True, nn.InstanceNorm3d, {"affine": True},
                              None, None, nn.LeakyReLU, {}),
          ConvDropoutNormReLU(nn.Conv3d, 2, 2, (7, 7, 1), 1, True, nn.InstanceNorm3d, {"affine": True},
                              None, None, nn.LeakyReLU, {}),
          ConvDropoutNormReLU(nn.Conv3d, 2, 2, (1, 1, 7), 1, True, nn.InstanceNorm3d, {"affine": True},
                              None, None, nn.LeakyReLU, {})]
    with torch.no_grad():
        for m3, m2 in zip(b3, branch2d):
            w3 = torch.randn_like(m3.conv.weight)  # the off-centre through-plane taps must not matter
            centre = w3.shape[-1] // 2
            w3[..., centre] = m2.conv.weight
            m3.conv.weight.copy_(w3)
            m3.conv.bias.copy_(m2.conv.bias)
        x = torch.randn(2, 8, 20, 20)
        y3 = nn.Sequential(*b3).eval()(x[..., None])[..., 0]
        assert torch.allclose(y3, branch2d(x), atol=1e-5)


def test_rejects_3d_and_bad_switches():
    with pytest.raises(ValueError, match="Conv2d"):
        build(plan_kwargs([[1, 1, 1], [2, 2, 2]], [4, 8], conv_op="torch.nn.modules.conv.Conv3d",
                          kernel_sizes=[[3, 3, 3]] * 2), 1, 2)
    with pytest.raises(ValueError, match="factorisation"):
        build(plan_kwargs([[1, 1], [2, 2]], [4, 8], factorisation="diagonal"), 1, 2)
    with pytest.raises(ValueError, match=">= 4"):
        build(plan_kwargs([[1, 1], [2, 2]], [4, 2]), 1, 2)
