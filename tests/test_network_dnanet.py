"""The faithful MfNS_De build against an independent DNANet forward pass (issue 22).

The reference below is written from DNANet's public code (``model/model_DNANet.py``: ``Res_CBAM_block``,
``ChannelAttention``, ``SpatialAttention``, ``DNANet.forward``), not from ours: its own modules, its own
wiring, its own order of concatenation in the fusion. Our network is built with BatchNorm and ReLU (DNANet's
choices; nnU-Net plans give instance norm and LeakyReLU instead), the reference's weights are copied into it,
and the four full-resolution outputs must agree to float64 precision. The two departures this test has to
encode are named where they happen: the channel MLP's hidden width ``max(C // 16, 4)`` (DNANet's ``C // 16``
is 0 below 16 channels) and biases on the gate convs and none on the shortcut conv (set to zero in the copy).
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from torch import nn

from nnunetv2_mfns.architectures import MfNSDe

torch.set_num_threads(1)

WIDTHS = [4, 8, 16, 32, 64]
NUM_BLOCKS = [2, 2, 2, 2]  # DNANet's default
N_CLASSES = 2


def hidden_width(c: int) -> int:
    return max(c // 16, 4)


class RefChannelAttention(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, hidden_width(c), 1, bias=False)
        self.fc2 = nn.Conv2d(hidden_width(c), c, 1, bias=False)

    def forward(self, x):
        avg = self.fc2(torch.relu(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1))))
        mx = self.fc2(torch.relu(self.fc1(nn.functional.adaptive_max_pool2d(x, 1))))
        return torch.sigmoid(avg + mx)


class RefSpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        d = torch.cat([torch.mean(x, dim=1, keepdim=True), torch.max(x, dim=1, keepdim=True)[0]], 1)
        return torch.sigmoid(self.conv1(d))


class RefResCBAM(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout)) if cin != cout else None
        self.ca = RefChannelAttention(cout)
        self.sa = RefSpatialAttention()

    def forward(self, x):
        residual = x if self.shortcut is None else self.shortcut(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.ca(out) * out
        out = self.sa(out) * out
        return torch.relu(out + residual)


def ref_layer(cin: int, cout: int, n: int = 1) -> nn.Sequential:
    return nn.Sequential(RefResCBAM(cin, cout), *[RefResCBAM(cout, cout) for _ in range(n - 1)])


class RefDNANet(nn.Module):
    """DNANet.forward with deep supervision, widths ``WIDTHS``, written out node by node as in DNANet."""

    def __init__(self, cin: int):
        super().__init__()
        f, nb = WIDTHS, NUM_BLOCKS
        self.pool = nn.MaxPool2d(2, 2)
        self.conv0_0 = ref_layer(cin, f[0])
        self.conv1_0 = ref_layer(f[0], f[1], nb[0])
        self.conv2_0 = ref_layer(f[1], f[2], nb[1])
        self.conv3_0 = ref_layer(f[2], f[3], nb[2])
        self.conv4_0 = ref_layer(f[3], f[4], nb[3])
        self.conv0_1 = ref_layer(f[0] + f[1], f[0])
        self.conv1_1 = ref_layer(f[1] + f[2] + f[0], f[1], nb[0])
        self.conv2_1 = ref_layer(f[2] + f[3] + f[1], f[2], nb[1])
        self.conv3_1 = ref_layer(f[3] + f[4] + f[2], f[3], nb[2])
        self.conv0_2 = ref_layer(f[0] * 2 + f[1], f[0])
        self.conv1_2 = ref_layer(f[1] * 2 + f[2] + f[0], f[1], nb[0])
        self.conv2_2 = ref_layer(f[2] * 2 + f[3] + f[1], f[2], nb[1])
        self.conv0_3 = ref_layer(f[0] * 3 + f[1], f[0])
        self.conv1_3 = ref_layer(f[1] * 3 + f[2] + f[0], f[1], nb[0])
        self.conv0_4 = ref_layer(f[0] * 4 + f[1], f[0])
        self.conv0_4_final = ref_layer(f[0] * 5, f[0])
        self.conv0_4_1x1 = nn.Conv2d(f[4], f[0], 1)
        self.conv0_3_1x1 = nn.Conv2d(f[3], f[0], 1)
        self.conv0_2_1x1 = nn.Conv2d(f[2], f[0], 1)
        self.conv0_1_1x1 = nn.Conv2d(f[1], f[0], 1)
        self.final1, self.final2, self.final3, self.final4 = (nn.Conv2d(f[0], N_CLASSES, 1) for _ in range(4))

    @staticmethod
    def up(x, k=2):
        return nn.functional.interpolate(x, scale_factor=k, mode="bilinear", align_corners=True)

    @staticmethod
    def down(x):
        return nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=True)

    def forward(self, inp):
        up, down = self.up, self.down
        x0_0 = self.conv0_0(inp)
        x1_0 = self.conv1_0(self.pool(x0_0))
        x0_1 = self.conv0_1(torch.cat([x0_0, up(x1_0)], 1))
        x2_0 = self.conv2_0(self.pool(x1_0))
        x1_1 = self.conv1_1(torch.cat([x1_0, up(x2_0), down(x0_1)], 1))
        x0_2 = self.conv0_2(torch.cat([x0_0, x0_1, up(x1_1)], 1))
        x3_0 = self.conv3_0(self.pool(x2_0))
        x2_1 = self.conv2_1(torch.cat([x2_0, up(x3_0), down(x1_1)], 1))
        x1_2 = self.conv1_2(torch.cat([x1_0, x1_1, up(x2_1), down(x0_2)], 1))
        x0_3 = self.conv0_3(torch.cat([x0_0, x0_1, x0_2, up(x1_2)], 1))
        x4_0 = self.conv4_0(self.pool(x3_0))
        x3_1 = self.conv3_1(torch.cat([x3_0, up(x4_0), down(x2_1)], 1))
        x2_2 = self.conv2_2(torch.cat([x2_0, x2_1, up(x3_1), down(x1_2)], 1))
        x1_3 = self.conv1_3(torch.cat([x1_0, x1_1, x1_2, up(x2_2), down(x0_3)], 1))
        x0_4 = self.conv0_4(torch.cat([x0_0, x0_1, x0_2, x0_3, up(x1_3)], 1))
        final = self.conv0_4_final(torch.cat([up(self.conv0_4_1x1(x4_0), 16), up(self.conv0_3_1x1(x3_1), 8),
                                              up(self.conv0_2_1x1(x2_2), 4), up(self.conv0_1_1x1(x1_3)), x0_4], 1))
        return [self.final1(x0_1), self.final2(x0_2), self.final3(x0_3), self.final4(final)]


def _copy(dst: nn.Module, src: nn.Module, in_perm=None) -> None:
    with torch.no_grad():
        w = src.weight if in_perm is None or src.weight.shape[1] == 1 else src.weight[:, in_perm]
        assert dst.weight.shape == w.shape, (dst, src)
        dst.weight.copy_(w)
        if getattr(dst, "bias", None) is not None:
            dst.bias.copy_(src.bias if getattr(src, "bias", None) is not None else torch.zeros_like(dst.bias))


def _copy_block(ours: nn.Module, ref: RefResCBAM, in_perm=None) -> None:
    _copy(ours.convs[0].conv, ref.conv1, in_perm)
    _copy(ours.convs[0].norm, ref.bn1)
    _copy(ours.convs[1].conv, ref.conv2)
    _copy(ours.convs[1].norm, ref.bn2)
    _copy(ours.attention.channel.mlp[0], ref.ca.fc1)
    _copy(ours.attention.channel.mlp[2], ref.ca.fc2)
    _copy(ours.attention.spatial.conv, ref.sa.conv1)
    if ref.shortcut is None:
        assert isinstance(ours.skip, nn.Identity)
    else:
        assert ours.skip.conv.bias is None  # ours: no bias before the shortcut's norm; zero it in the reference
        with torch.no_grad():
            ref.shortcut[0].bias.zero_()
        _copy(ours.skip.conv, ref.shortcut[0], in_perm)
        _copy(ours.skip.norm, ref.shortcut[1])


def _copy_layer(ours: nn.Module, ref: nn.Sequential, in_perm=None) -> None:
    blocks = list(ours) if isinstance(ours, nn.Sequential) else [ours]
    assert len(blocks) == len(ref), (ours, ref)
    for k, (o, r) in enumerate(zip(blocks, ref)):
        _copy_block(o, r, in_perm if k == 0 else None)


def _build_ours(cin: int, **overrides) -> MfNSDe:
    kw = dict(input_channels=cin, n_stages=5, features_per_stage=WIDTHS, conv_op=nn.Conv2d, kernel_sizes=3,
              strides=[[1, 1]] + [[2, 2]] * 4, n_conv_per_stage=2, num_classes=N_CLASSES, n_conv_per_stage_decoder=2,
              conv_bias=True, norm_op=nn.BatchNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.ReLU,
              nonlin_kwargs={"inplace": True}, deep_supervision=True)
    kw.update(overrides)
    return MfNSDe(**kw)


def _randomise(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


def _load_reference_into(ours: MfNSDe, ref: RefDNANet) -> None:
    enc = ours.encoder.stages
    _copy_layer(enc[0][-1], ref.conv0_0)
    for i in range(1, 5):
        assert isinstance(enc[i][0], nn.MaxPool2d)
        _copy_layer(enc[i][-1], getattr(ref, f"conv{i}_0"))
    for i in range(4):
        for j in range(1, 5 - i):
            _copy_layer(ours.decoder.nodes[i][j - 1], getattr(ref, f"conv{i}_{j}"))
    # fusion: ours concatenates [x0_4, proj(x1_3), proj(x2_2), proj(x3_1), proj(x4_0)], DNANet the reverse
    # order of the same five blocks of WIDTHS[0] channels; permute the fusion's input channels accordingly
    c = WIDTHS[0]
    ours_order = [4, 3, 2, 1, 0]  # position in DNANet's concatenation of each of our blocks
    perm = torch.cat([torch.arange(k * c, (k + 1) * c) for k in ours_order])
    _copy_layer(ours.decoder.fusion, ref.conv0_4_final, perm)
    for i, name in zip(range(1, 5), ("conv0_1_1x1", "conv0_2_1x1", "conv0_3_1x1", "conv0_4_1x1")):
        _copy(ours.decoder.fusion_proj[i - 1], getattr(ref, name))
    _copy(ours.decoder.seg_layers[0], ref.final4)
    for head, name in zip(ours.decoder.row0_heads, ("final1", "final2", "final3")):
        _copy(head, getattr(ref, name))


def _compare(ours: MfNSDe, ref: RefDNANet, x: torch.Tensor) -> float:
    ours.train(), ref.train()  # batch statistics in both: no running-stat state to copy
    with torch.no_grad():
        o = ours(x)
        r = ref(x)
    # ours: [fused, X(0,1), X(0,2), X(0,3) heads, coarse heads...]; DNANet: [x0_1, x0_2, x0_3, fused]
    pairs = [(o[0], r[3]), (o[1], r[0]), (o[2], r[1]), (o[3], r[2])]
    return max(float((a - b).abs().max()) for a, b in pairs)


@pytest.fixture(scope="module")
def reference_and_input():
    torch.manual_seed(0)
    ref = RefDNANet(1).double()
    _randomise(ref, 1)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return ref, x


def test_faithful_build_computes_dnanet_forward(reference_and_input):
    ref, x = reference_and_input
    ours = _build_ours(1).double()
    _load_reference_into(ours, ref)
    assert len(ours(x)) == 4 + 4  # DNANet's four full-resolution outputs, then MfNS_De's coarse heads
    assert _compare(ours, ref, x) < 1e-9


@pytest.mark.parametrize("planted", [
    {"resample": "v1"},                # shallower row max-pooled instead of DNANet's bilinear 0.5x
    {"blocks_per_row": [1, 1, 1, 1, 1]},  # one Res-CBAM block where DNANet has num_blocks = 2
])
def test_reference_detects_a_wiring_change(reference_and_input, planted):
    # the comparison is sensitive: a network that differs from DNANet in one wiring detail does not match it
    ref, x = reference_and_input
    ours = _build_ours(1, **planted).double()
    try:
        _load_reference_into(ours, ref)
    except (AssertionError, IndexError, RuntimeError):
        return  # the weights do not even fit: the structure differs
    assert _compare(ours, ref, x) > 1e-3
