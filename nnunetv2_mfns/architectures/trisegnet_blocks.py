"""Building blocks of the 2D TriSegNet (``trisegnet.py``), each a 2D form of a block of chenypic/TriSegNet
(TriSegNet.py@54673f8): the inception block, the Xception-style separable residual block and the
squeeze-excitation without reduction. Every conv-norm-nonlin unit is dynamic_network_architectures'
``ConvDropoutNormReLU`` with the plan's ops."""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU


class PlanOps:
    """The plan's conv/norm/dropout/nonlin choices, so every block is built the same way."""

    def __init__(self, conv_op, conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs,
                 nonlin, nonlin_kwargs, nonlin_first) -> None:
        self.conv_op, self.conv_bias = conv_op, conv_bias
        self.norm_op, self.norm_op_kwargs = norm_op, dict(norm_op_kwargs or {})
        self.dropout_op, self.dropout_op_kwargs = dropout_op, dropout_op_kwargs
        self.nonlin, self.nonlin_kwargs, self.nonlin_first = nonlin, dict(nonlin_kwargs or {}), nonlin_first

    def cdnr(self, cin: int, cout: int, kernel, stride=1) -> ConvDropoutNormReLU:
        return ConvDropoutNormReLU(self.conv_op, cin, cout, kernel, stride, self.conv_bias, self.norm_op,
                                   self.norm_op_kwargs, self.dropout_op, self.dropout_op_kwargs,
                                   self.nonlin, self.nonlin_kwargs, self.nonlin_first)

    def act(self) -> nn.Module:
        # standalone activations see tensors that are also used elsewhere (residual inputs): never in place
        if self.nonlin is None:
            return nn.Identity()
        return self.nonlin(**{**self.nonlin_kwargs, "inplace": False}) if "inplace" in \
            self.nonlin_kwargs else self.nonlin(**self.nonlin_kwargs)

    def norm(self, c: int) -> nn.Module:
        return nn.Identity() if self.norm_op is None else self.norm_op(c, **self.norm_op_kwargs)

    def dropout(self) -> nn.Module:
        return nn.Identity() if self.dropout_op is None else self.dropout_op(**(self.dropout_op_kwargs or {}))


class InceptionBlock(nn.Module):
    """Original ``Isomorphism_incept``: 4 branches (1, 3, 5, 7), concat, 1x1 projection, residual, nonlin."""

    def __init__(self, ops: PlanOps, channels: int, factorisation: str) -> None:
        super().__init__()
        # the original asserts C % 4 == 0; plans may give other widths, so spread the remainder
        widths = [channels // 4 + (1 if b < channels % 4 else 0) for b in range(4)]
        branches = [ops.cdnr(channels, widths[0], 1)]
        for w, k in zip(widths[1:], (3, 5, 7)):
            first, second = ((k, k), (1, 1)) if factorisation == "slice" else ((k, 1), (1, k))
            branches.append(nn.Sequential(ops.cdnr(channels, w, 1), ops.cdnr(w, w, first), ops.cdnr(w, w, second)))
        self.branches = nn.ModuleList(branches)
        self.proj = ops.conv_op(channels, channels, 1, bias=True)
        self.act = ops.act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.proj(torch.cat([b(x) for b in self.branches], 1)))


class SeparableConvNorm(nn.Module):
    """nonlin -> depthwise k x k -> pointwise 1x1 -> (dropout) -> norm, one repeat of the original ``Block``."""

    def __init__(self, ops: PlanOps, cin: int, cout: int, kernel: Sequence[int], with_act: bool) -> None:
        super().__init__()
        pad = [(k - 1) // 2 for k in kernel]
        self.act = ops.act() if with_act else nn.Identity()
        self.depthwise = ops.conv_op(cin, cin, list(kernel), 1, pad, groups=cin, bias=False)
        self.pointwise = ops.conv_op(cin, cout, 1, bias=ops.conv_bias)
        self.dropout = ops.dropout()
        self.norm = ops.norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.pointwise(self.depthwise(self.act(x)))))


class ContextBlock(nn.Module):
    """Original Xception-style ``Block`` (grow_first): separable repeats, optional strided conv + norm at the
    end, shortcut identity or 1x1 (strided) conv + norm."""

    def __init__(self, ops: PlanOps, cin: int, cout: int, reps: int, stride: Sequence[int], kernel: Sequence[int],
                 start_with_act: bool) -> None:
        super().__init__()
        layers: List[nn.Module] = [SeparableConvNorm(ops, cin if r == 0 else cout, cout, kernel,
                                                     with_act=start_with_act or r > 0) for r in range(reps)]
        strided = any(s != 1 for s in stride)
        if strided:
            pad = [(k - 1) // 2 for k in kernel]
            layers += [ops.conv_op(cout, cout, list(kernel), list(stride), pad, bias=ops.conv_bias), ops.norm(cout)]
        self.rep = nn.Sequential(*layers)
        self.skip = nn.Sequential(ops.conv_op(cin, cout, 1, list(stride), bias=ops.conv_bias), ops.norm(cout)) \
            if (cin != cout or strided) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + self.skip(x)


class SqueezeExcitation(nn.Module):
    """Original ``SEModule``: no reduction, GAP -> 1x1 -> nonlin -> 1x1 -> sigmoid -> channel scaling."""

    def __init__(self, ops: PlanOps, channels: int) -> None:
        super().__init__()
        self.fc1 = ops.conv_op(channels, channels, 1, bias=True)
        self.act = ops.act()
        self.fc2 = ops.conv_op(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.mean(x, dim=tuple(range(2, x.ndim)), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(g))))


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if list(x.shape[2:]) == list(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
