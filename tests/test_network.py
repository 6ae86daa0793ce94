"""Tests of the MfNS_De network (nnunetv2_mfns.architectures). CPU only, tiny plans, < 90 s in total."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from torch import nn

from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunetv2_mfns.architectures import CBAM, MfNSDe, deep_supervision_scales
from nnunetv2_mfns.architectures.mfns_de import DNANET_WIDTHS, V1_BUILD
from nnunetv2_mfns.architectures.nested_blocks import ConvCBAMNode, ResCBAMNode, ResCBAMStack

torch.set_num_threads(1)

CLASS_PATH = "nnunetv2_mfns.architectures.mfns_de.MfNSDe"
REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def plan_kwargs(dim: int, strides, features, **overrides) -> dict:
    """nnU-Net-style arch_kwargs (dotted strings, as in nnUNetPlans.json)."""
    n = len(strides)
    kw = {
        "n_stages": n,
        "features_per_stage": list(features),
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "kernel_sizes": [[3] * dim] * n,
        "strides": [list(s) for s in strides],
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    kw.update(overrides)
    return kw


# the pre-issue-22 build; BUILDS parametrises the tests that hold for both builds
V1 = dict(V1_BUILD)
BUILDS = {"faithful": {}, "v1": V1}


def node_first_conv(node: nn.Module) -> nn.Module:
    """The first ConvDropoutNormReLU of a node of either build (conv->CBAM, one Res-CBAM block, or a stack)."""
    if isinstance(node, ConvCBAMNode):
        return node[0].convs[0]
    if isinstance(node, ResCBAMStack):
        node = node[0]
    return node.convs[0]


def expected_ds_scales(strides, n_rows: int, full_resolution_heads: bool) -> list:
    """Written out from the layout's definition: the fused output and (faithful) DNANet's side heads on
    X(0, 1..L-2) at full resolution, then one head per coarser row at 1/cumprod(strides)."""
    per_row = list(list(i) for i in 1 / np.cumprod(np.vstack(strides), axis=0))[:n_rows]
    return [per_row[0]] * ((n_rows - 1) if full_resolution_heads else 1) + per_row[1:]


def build(kw: dict, in_ch: int, n_cls: int, ds: bool = True, seed: int = 0) -> MfNSDe:
    torch.manual_seed(seed)
    return get_network_from_plans(CLASS_PATH, kw, REQ_IMPORT, in_ch, n_cls, allow_init=True, deep_supervision=ds)


ANISO_7 = [[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 1], [1, 2]]

# (name, dim, strides, features, patch, input channels, classes, extra kwargs)
CASES = [
    ("aniso7_nondivisible", 2, ANISO_7, [4, 6, 8, 8, 8, 8, 8], (37, 50), 1, 2, {}),
    ("aniso_rows_divisible", 2, [[1, 1], [2, 1], [2, 2], [1, 2], [2, 2], [2, 2]], [4, 8, 8, 8, 8, 8],
     (64, 48), 3, 3, {"max_nested_stages": 4}),
    ("4stage_no_cap", 2, [[1, 1], [2, 2], [2, 2], [2, 2]], [4, 8, 8, 8], (30, 27), 1, 3, {}),
    ("3d", 3, [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], [4, 6, 8, 8], (9, 20, 17), 1, 2, {"max_nested_stages": 3}),
]


def nnunet_stock_scales(strides) -> list:
    """Verbatim nnUNetTrainer._get_deep_supervision_scales arithmetic."""
    return list(list(i) for i in 1 / np.cumprod(np.vstack(strides), axis=0))[:-1]


@pytest.mark.parametrize("build_name", list(BUILDS))
@pytest.mark.parametrize("name,dim,strides,features,patch,in_ch,n_cls,extra", CASES, ids=[c[0] for c in CASES])
def test_output_shapes_match_nnunet_ds_targets(name, dim, strides, features, patch, in_ch, n_cls, extra, build_name):
    kw = plan_kwargs(dim, strides, features, **extra, **BUILDS[build_name])
    net = build(kw, in_ch, n_cls, ds=True)
    n_rows = min(len(strides), extra.get("max_nested_stages", 5))
    assert net.n_rows == n_rows
    assert net.ds_strides == [list(s) for s in strides[:n_rows]]

    # nnU-Net's scales are 1/cumprod(strides) without the last stage; the network builds n_rows stages, one
    # head per row (v1) plus DNANet's full-resolution side heads (faithful)
    per_row = list(list(i) for i in 1 / np.cumprod(np.vstack(strides), axis=0))[:n_rows]
    if len(strides) > n_rows:  # capped plans: identical to nnU-Net's own list, truncated
        assert per_row == nnunet_stock_scales(strides)[:n_rows]
    assert deep_supervision_scales(kw["strides"], max_nested_stages=n_rows) == per_row
    expected_scales = expected_ds_scales(strides, n_rows, build_name == "faithful")
    assert net.get_deep_supervision_scales() == expected_scales

    # the DS targets exactly as nnU-Net's data pipeline produces them
    seg = torch.zeros((1, *patch), dtype=torch.int16)
    targets = DownsampleSegForDSTransform(expected_scales)(segmentation=seg)["segmentation"]

    x = torch.randn(2, in_ch, *patch)
    with torch.no_grad():
        outs = net(x)
    assert isinstance(outs, list) and len(outs) == len(expected_scales) == len(targets)
    for o, t in zip(outs, targets):
        assert tuple(o.shape) == (2, n_cls, *t.shape[1:])
    assert tuple(outs[0].shape[2:]) == patch

    # outputs and targets go through nnU-Net's own deep-supervision loss
    loss = DeepSupervisionWrapper(
        DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False}, {}, weight_ce=1, weight_dice=1,
                       dice_class=MemoryEfficientSoftDiceLoss),
        [1 / 2 ** i for i in range(len(outs))])
    batch_targets = [torch.stack([t, t]).long() for t in targets]
    val = loss(outs, batch_targets)
    assert torch.isfinite(val)

    # compute_conv_feature_map_size: positive and growing with the input
    small = net.compute_conv_feature_map_size(patch)
    big = net.compute_conv_feature_map_size(tuple(2 * p for p in patch))
    assert 0 < small < big


def test_faithful_widths_blocks_and_node_wiring():
    # DNANet's widths capped by the plan, Res-CBAM everywhere: 1 block on row 0, 2 on the others
    kw = plan_kwargs(2, ANISO_7, [32, 64, 128, 256, 512, 512, 512])
    assert build(kw, 1, 2).widths == list(DNANET_WIDTHS)
    kw = plan_kwargs(2, ANISO_7, [4, 8, 16, 32, 512, 512, 512])
    net = build(kw, 1, 2)
    L, w = net.n_rows, net.widths
    assert L == 5 and w == [4, 8, 16, 32, 256] and net.blocks_per_row == [1, 2, 2, 2, 2]
    for i, stage in enumerate(net.encoder.stages):
        block = stage[-1]
        assert isinstance(block, ResCBAMNode if i == 0 else ResCBAMStack), i
        if i > 0:  # DNANet downsamples by max pooling with the plan's stride, not by a strided conv
            assert isinstance(stage[0], nn.MaxPool2d) and list(stage[0].kernel_size) == ANISO_7[i]
        assert node_first_conv(block).conv.stride == (1, 1)
    for i in range(L - 1):
        for j in range(1, L - i):
            node = net.decoder.nodes[i][j - 1]
            assert isinstance(node, ResCBAMNode if i == 0 else ResCBAMStack), (i, j)
            assert node_first_conv(node).conv.in_channels == j * w[i] + w[i + 1] + (w[i - 1] if i >= 1 else 0)
            blocks = [node] if i == 0 else list(node)
            assert all(b.attention is not None for b in blocks) and len(blocks) == net.blocks_per_row[i]
    assert len(net.decoder.row0_heads) == L - 2


def test_cap_widths_and_node_wiring():
    kw = plan_kwargs(2, ANISO_7, [4, 8, 16, 32, 64, 64, 64], **dict(V1, max_features=16))
    net = build(kw, 1, 2)
    L = net.n_rows
    assert L == 5 and net.widths == [4, 8, 16, 16, 16]
    assert len(net.encoder.stages) == L  # deeper plan stages dropped
    assert sum(len(r) for r in net.decoder.nodes) == L * (L - 1) // 2
    w = net.widths
    for i in range(L - 1):
        assert len(net.decoder.nodes[i]) == L - 1 - i
        for j in range(1, L - i):
            first_conv = net.decoder.nodes[i][j - 1][0].convs[0].conv
            expected_in = j * w[i] + w[i + 1] + (w[i - 1] if i >= 1 else 0)
            assert first_conv.in_channels == expected_in, (i, j)
            assert first_conv.out_channels == w[i]
    assert net.decoder.fusion[0].convs[0].conv.in_channels == L * w[0]
    assert [h.in_channels for h in net.decoder.seg_layers] == w
    # encoder strides are the plan's
    assert [list(s) for s in net.encoder.strides] == ANISO_7[:L]


@pytest.mark.parametrize("build_name", list(BUILDS))
def test_all_parameters_receive_gradient(build_name):
    # conv_bias False: a conv bias directly followed by instance norm has an (analytically) zero gradient
    kw = plan_kwargs(2, ANISO_7[:6], [4, 6, 8, 8, 8, 8], conv_bias=False, **BUILDS[build_name])
    net = build(kw, 1, 2)
    net.train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 35, 33, generator=g)
    outs = net(x)
    loss = sum(nn.functional.cross_entropy(o, torch.randint(0, 2, (o.shape[0], *o.shape[2:]), generator=g))
               for o in outs)
    loss.backward()
    names = [n for n, _ in net.named_parameters()]
    keys = ["decoder.nodes.", "decoder.fusion.", "decoder.fusion_proj.", "decoder.seg_layers.", ".channel.mlp.",
            ".spatial.conv."]
    if build_name == "faithful":
        keys += ["decoder.row0_heads.", "encoder.stages.0.0.attention.channel.", "encoder.stages.1.1.0.skip"]
    for key in keys:
        assert any(key in n for n in names), key
    zero = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert zero == []


@pytest.mark.parametrize("build_name", list(BUILDS))
def test_attention_off_removes_attention_parameters(build_name):
    kw = plan_kwargs(2, ANISO_7, [4, 6, 8, 8, 8, 8, 8], **BUILDS[build_name])
    on = build(kw, 1, 2)
    off = build(dict(kw, use_attention=False), 1, 2)
    cbams = [m for m in on.modules() if isinstance(m, CBAM)]
    L, b = on.n_rows, on.blocks_per_row
    if build_name == "v1":  # one per nested node plus the fusion block
        assert len(cbams) == L * (L - 1) // 2 + 1
    else:  # one per Res-CBAM block: encoder column, nested nodes (L-1-i of them on row i), fusion
        assert len(cbams) == sum(b) + sum((L - 1 - i) * b[i] for i in range(L - 1)) + b[0]
    att_params = sum(p.numel() for m in cbams for p in m.parameters())
    assert att_params > 0
    n_on = sum(p.numel() for p in on.parameters())
    n_off = sum(p.numel() for p in off.parameters())
    assert n_on - n_off == att_params
    assert not any(isinstance(m, CBAM) for m in off.modules())
    assert not any(".channel." in n or ".spatial." in n for n, _ in off.named_parameters())
    with torch.no_grad():
        outs = off(torch.randn(1, 1, 32, 32))
    assert len(outs) == len(off.get_deep_supervision_scales())


def test_small_channel_attention_hidden_width_is_guarded():
    # DNANet's C // 16 would be 0 for 4 channels
    kw = plan_kwargs(2, [[1, 1], [2, 2], [2, 2]], [4, 8, 16])
    net = build(kw, 1, 2)
    hidden = {m.channel.hidden for m in net.modules() if isinstance(m, CBAM)}
    assert hidden == {4}


def test_get_network_from_plans_resolves_strings_and_initialises():
    kw = plan_kwargs(2, ANISO_7, [8, 16, 32, 64, 64, 64, 64])
    net = build(kw, 3, 2, ds=False, seed=0)
    assert type(net) is MfNSDe
    first = node_first_conv(net.encoder.stages[0][-1])
    assert isinstance(first.conv, nn.Conv2d) and first.conv.in_channels == 3
    assert isinstance(first.norm, nn.InstanceNorm2d)
    assert isinstance(first.nonlin, nn.LeakyReLU)
    # He init (InitWeights_He(1e-2)): std = sqrt(2 / (1 + a^2) / fan_in); the default torch init is ~1/3 of it
    conv = node_first_conv(net.decoder.nodes[0][2]).conv
    fan_in = conv.weight[0].numel()
    expected_std = np.sqrt(2 / (1 + 1e-4) / fan_in)
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.1
    assert torch.all(conv.bias == 0)
    # deterministic for a given seed
    again = build(kw, 3, 2, ds=False, seed=0)
    for (n1, p1), (n2, p2) in zip(net.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_decoder_toggle_and_strict_loading_from_ds_weights():
    kw = plan_kwargs(2, ANISO_7, [4, 6, 8, 8, 8, 8, 8])
    ds_net = build(kw, 1, 2, ds=True, seed=3).eval()
    x = torch.randn(1, 1, 40, 36)
    with torch.no_grad():
        outs = ds_net(x)
        ds_net.decoder.deep_supervision = False  # what nnUNetTrainer.set_deep_supervision_enabled does
        single = ds_net(x)
    assert isinstance(outs, list) and torch.is_tensor(single)
    assert torch.equal(single, outs[0])

    inf_net = build(kw, 1, 2, ds=False, seed=4).eval()
    result = inf_net.load_state_dict(ds_net.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        assert torch.equal(inf_net(x), single)
        inf_net.decoder.deep_supervision = True
        assert len(inf_net(x)) == len(inf_net.get_deep_supervision_scales()) == inf_net.n_rows + inf_net.n_rows - 2


def test_parameter_count_below_plain_unet_for_typical_plan():
    # the cap exists to keep the nested grid affordable (docs/reference/design.md section 2): with nnU-Net's 7-stage,
    # 32..512 plan, MfNSDe (5 rows, widths <= 256) must stay well below the plain U-Net's 33.5 M
    features = [32, 64, 128, 256, 512, 512, 512]
    kw = plan_kwargs(2, [[1, 1]] + [[2, 2]] * 6, features)
    mfns = get_network_from_plans(CLASS_PATH, kw, REQ_IMPORT, 1, 2, allow_init=False, deep_supervision=True)
    plain = get_network_from_plans("dynamic_network_architectures.architectures.unet.PlainConvUNet", kw,
                                   REQ_IMPORT, 1, 2, allow_init=False, deep_supervision=True)
    assert isinstance(plain, PlainConvUNet)
    n_m = sum(p.numel() for p in mfns.parameters())
    n_p = sum(p.numel() for p in plain.parameters())
    assert 30e6 < n_p < 36e6
    assert n_m < 0.5 * n_p


@pytest.mark.parametrize("change,match", [
    ({"n_stages": 1, "features_per_stage": [4], "kernel_sizes": [[3, 3]], "strides": [[1, 1]],
      "n_conv_per_stage": [2], "n_conv_per_stage_decoder": []}, "n_stages"),
    ({"features_per_stage": [4, 8]}, "features_per_stage"),
    ({"strides": [[1, 1], [2, 2]]}, "strides"),
    ({"strides": [[1, 1], [2, 2, 2], [2, 2]]}, r"strides\[1\]"),
    ({"kernel_sizes": [[3, 3], [4, 4], [3, 3]]}, "kernel_sizes"),
    ({"n_conv_per_stage_decoder": [2, 2, 2]}, "n_conv_per_stage_decoder"),
    ({"conv_op": "torch.nn.modules.conv.Conv1d"}, "conv_op"),
    ({"conv_op": "torch.nn.NoSuchConv"}, "conv_op"),
    ({"max_nested_stages": 1}, "max_nested_stages"),
    ({"max_features": 0}, "max_features"),
    ({"max_features": [16, 0]}, "max_features"),
    ({"encoder_block": "resnet"}, "encoder_block"),
    ({"resample": "nearest"}, "resample"),
    ({"blocks_per_row": [1, 2]}, "blocks_per_row"),
    ({"blocks_per_row": [1, 0, 2]}, "n_blocks"),
    ({"node_block": "conv_cbam", "blocks_per_row": [1, 2, 2]}, "n_blocks"),
])
def test_bad_requests_raise_value_error(change, match):
    kw = plan_kwargs(2, [[1, 1], [2, 2], [2, 2]], [4, 8, 8])
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        get_network_from_plans(CLASS_PATH, kw, ["norm_op", "dropout_op", "nonlin"], 1, 2, deep_supervision=True)


# ---- network switches (issue 10, 14 on the v1 build; issue 22 on the faithful one) --------------------------
SWITCHES = [
    ("v1_res_cbam", {**V1, "node_block": "res_cbam"}),
    ("v1_neutral_init", {**V1, "attention_init": "neutral"}),
    ("v1_res_cbam_neutral", {**V1, "node_block": "res_cbam", "attention_init": "neutral"}),
    ("v1_res_cbam_no_attention", {**V1, "node_block": "res_cbam", "use_attention": False}),
    ("v1_attention_coarse_rows", {**V1, "attention_from_row": 1}),
    ("v1_fast", {**V1, "input_projection": True, "attention_from_row": 1}),
    ("v1_res_cbam_projection", {**V1, "node_block": "res_cbam", "input_projection": True}),
    ("faithful_neutral_init", {"attention_init": "neutral"}),
    ("faithful_coarse_attention", {"attention_from_row": 1}),
    ("faithful_projection", {"input_projection": True}),
    ("faithful_one_block_per_row", {"blocks_per_row": [1, 1, 1, 1, 1]}),
    ("faithful_plain_encoder", {"encoder_block": "plain"}),
    ("faithful_v1_resampling", {"resample": "v1"}),
]


@pytest.mark.parametrize("name,switch", SWITCHES, ids=[s[0] for s in SWITCHES])
def test_switch_shapes_gradients_and_strict_loading(name, switch):
    # conv_bias False: a conv bias directly followed by instance norm has an (analytically) zero gradient
    kw = plan_kwargs(2, ANISO_7[:6], [4, 6, 8, 8, 8, 8], conv_bias=False, **switch)
    net = build(kw, 1, 2, ds=True, seed=5)
    patch = (35, 33)
    seg = torch.zeros((1, *patch), dtype=torch.int16)
    targets = DownsampleSegForDSTransform(net.get_deep_supervision_scales())(segmentation=seg)["segmentation"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, *patch, generator=g)
    net.train()
    outs = net(x)
    assert len(outs) == len(net.get_deep_supervision_scales()) == len(targets)
    for o, t in zip(outs, targets):
        assert tuple(o.shape) == (2, 2, *t.shape[1:])
    loss = sum(nn.functional.cross_entropy(o, torch.randint(0, 2, (o.shape[0], *o.shape[2:]), generator=g))
               for o in outs)
    loss.backward()
    zero = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert zero == []

    net.eval()
    inf_net = build(dict(kw), 1, 2, ds=False, seed=6).eval()
    res = inf_net.load_state_dict(net.state_dict(), strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    with torch.no_grad():
        net.decoder.deep_supervision = False
        assert torch.equal(inf_net(x), net(x))
    assert 0 < net.compute_conv_feature_map_size(patch)


def test_v1_build_keeps_its_state_dict_layout():
    # checkpoints trained before issue 22 (the v1 build, nnUNetTrainerMfNSDe_V1) must keep loading
    kw = plan_kwargs(2, [[1, 1], [2, 2], [2, 2]], [4, 8, 16], **V1)
    keys = set(build(kw, 1, 2).state_dict())
    for key in ("decoder.nodes.0.0.0.convs.0.conv.weight", "decoder.nodes.0.0.1.channel.mlp.0.weight",
                "decoder.nodes.1.0.1.spatial.conv.weight", "decoder.fusion.0.convs.1.norm.weight",
                "decoder.fusion.1.channel.mlp.2.bias"):
        assert key in keys, key
    assert not any(".skip." in k for k in keys)


def test_res_cbam_node_computes_dnanet_block():
    from nnunetv2_mfns.architectures import ResCBAMNode
    kw = plan_kwargs(2, [[1, 1], [2, 2], [2, 2]], [4, 8, 16], node_block="res_cbam")
    net = build(kw, 1, 2).eval()
    node = net.decoder.nodes[0][1]
    assert isinstance(node, ResCBAMNode)
    # last conv without nonlin (the nonlin follows the residual sum), 1x1 conv + norm shortcut
    assert not hasattr(node.convs[-1], "nonlin") and hasattr(node.convs[0], "nonlin")
    assert node.skip.conv.kernel_size == (1, 1) and hasattr(node.skip, "norm")
    x = torch.randn(2, node.input_channels, 12, 10)
    with torch.no_grad():
        branch = node.convs(x)
        branch = branch * node.attention.channel(branch)
        branch = branch * node.attention.spatial(branch)
        expected = nn.functional.leaky_relu(branch + node.skip(x), 0.01)
        assert torch.allclose(node(x), expected, atol=1e-6)


def test_neutral_attention_init_starts_gates_near_half_and_he_does_not_change():
    from nnunetv2_mfns.architectures import ChannelAttention, SpatialAttention
    kw = plan_kwargs(2, [[1, 1], [2, 2], [2, 2], [2, 2]], [8, 16, 32, 32])
    x = torch.randn(2, 1, 32, 32)

    def gates(net):
        vals = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: vals.append(o.flatten()))
                 for m in net.modules() if isinstance(m, (ChannelAttention, SpatialAttention))]
        with torch.no_grad():
            net(x)
        for h in hooks:
            h.remove()
        return torch.cat(vals)

    neutral = gates(build(dict(kw, attention_init="neutral"), 1, 2, seed=0))
    assert torch.all((neutral > 0.4) & (neutral < 0.6))
    he = build(kw, 1, 2, seed=0)
    # the default is nnU-Net's He init everywhere, the gate layers included
    w = he.decoder.nodes[0][0].attention.spatial.conv.weight
    assert abs(w.std().item() / np.sqrt(2 / (1 + 1e-4) / w[0].numel()) - 1) < 0.35
    assert gates(he).std() > 5 * neutral.std()


@pytest.mark.parametrize("change,match", [
    ({"node_block": "dense"}, "node_block"),
    ({"attention_init": "zeros"}, "attention_init"),
    ({"attention_from_row": -1}, "attention_from_row"),
])
def test_bad_switches_raise_value_error(change, match):
    kw = plan_kwargs(2, [[1, 1], [2, 2], [2, 2]], [4, 8, 8], **change)
    with pytest.raises(ValueError, match=match):
        get_network_from_plans(CLASS_PATH, kw, REQ_IMPORT, 1, 2, deep_supervision=True)


def test_network_variant_trainers_build_their_switch_and_load_strictly():
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
    from nnunetv2_mfns.trainers import nnUNetTrainerMfNSDe, __all__ as registered
    from nnunetv2_mfns.trainers.variants_network import NETWORK_VARIANTS
    from nnunetv2_mfns.architectures import ResCBAMNode

    kw = plan_kwargs(2, [[1, 1], [2, 2], [2, 2], [2, 2]], [4, 8, 8, 8])
    cm = ConfigurationManager({"architecture": {"network_class_name": "PlainConvUNet", "arch_kwargs": kw,
                                                "_kw_requires_import": REQ_IMPORT}})
    assert nnUNetTrainerMfNSDe.network_options == {}
    for cls in NETWORK_VARIANTS:
        assert cls.__name__ in registered and f"{cls.__name__}_demo" in registered
        # one class attribute, nothing else
        assert set(vars(cls)) - {"__module__", "__doc__", "__qualname__", "network_options"} == set()
        torch.manual_seed(0)
        net = cls.build_network_architecture(None, cm, 1, 2, enable_deep_supervision=True)
        for key, value in cls.network_options.items():
            if key == "max_features":  # the network keeps one cap per row
                value = [value] * net.n_rows
            assert getattr(net, key, getattr(net.decoder, key, None)) == value, (cls.__name__, key)
        inf = cls.build_network_architecture(None, cm, 1, 2, enable_deep_supervision=False)
        inf.load_state_dict(net.state_dict(), strict=True)
    from nnunetv2_mfns.trainers.variants_network import nnUNetTrainerMfNSDe_ResCBAM, nnUNetTrainerMfNSDe_V1
    res = nnUNetTrainerMfNSDe_ResCBAM.build_network_architecture(None, cm, 1, 2, enable_deep_supervision=True)
    assert any(isinstance(m, ResCBAMNode) for m in res.modules())
    v1 = nnUNetTrainerMfNSDe_V1.build_network_architecture(None, cm, 1, 2, enable_deep_supervision=True)
    assert not any(isinstance(m, ResCBAMNode) for m in v1.modules())
    # the default trainer builds the faithful network: Res-CBAM encoder and nodes, no plain conv node left
    default = nnUNetTrainerMfNSDe.build_network_architecture(None, cm, 1, 2, enable_deep_supervision=True)
    assert not any(isinstance(m, ConvCBAMNode) for m in default.modules())
    assert all(isinstance(s[-1], (ResCBAMNode, ResCBAMStack)) for s in default.encoder.stages)


def test_input_projection_makes_first_node_conv_1x1_and_cuts_macs():
    from torch.utils.flop_counter import FlopCounterMode
    kw = plan_kwargs(2, [[1, 1], [2, 2], [2, 2], [2, 2]], [8, 16, 32, 32])
    faithful = build(dict(kw, **V1), 1, 2)
    fast = build(dict(kw, input_projection=True, **V1), 1, 2)
    for net, k in ((faithful, (3, 3)), (fast, (1, 1))):
        first = net.decoder.nodes[0][2][0].convs[0]
        assert first.conv.kernel_size == k and first.conv.in_channels == net.decoder.node_in_channels(0, 3)
        assert net.decoder.nodes[0][2][0].convs[1].conv.kernel_size == (3, 3)
        assert net.decoder.fusion[0].convs[0].conv.kernel_size == k
    x = torch.randn(1, 1, 32, 32)

    def macs(net):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            net(x)
        return fc.get_total_flops()
    assert macs(fast) < 0.6 * macs(faithful)


@pytest.mark.parametrize("build_name", list(BUILDS))
def test_checkpoint_nodes_keeps_outputs_and_gradients(build_name):
    # issue 14: a cheaper-memory execution must compute the same thing (same weights, same input)
    kw = plan_kwargs(2, ANISO_7[:5], [4, 6, 8, 8, 8], conv_bias=False, **BUILDS[build_name])
    ref = build(kw, 1, 2, seed=7).train()
    ck = build(dict(kw, checkpoint_nodes=True), 1, 2, seed=0).train()
    ck.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 1, 36, 34, generator=torch.Generator().manual_seed(2))
    outs_ref, outs_ck = ref(x), ck(x)
    for a, b in zip(outs_ref, outs_ck):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    sum((o * o).mean() for o in outs_ref).backward()
    sum((o * o).mean() for o in outs_ck).backward()
    for (n, p), (_, q) in zip(ref.named_parameters(), ck.named_parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), n
    ck.eval()
    with torch.no_grad():
        assert torch.allclose(ck(x)[0], ref.eval()(x)[0], rtol=0, atol=1e-6)
