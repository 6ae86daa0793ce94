"""CBAM-style attention (channel, then spatial) for the MfNS_De nodes.

Follows Woo et al. 2018 (CBAM) as used in DNANet's Res-CBAM block, with two changes:
- the channel MLP's hidden width is ``max(channels // reduction, min_hidden)`` because DNANet's plain
  ``C // 16`` is 0 for C < 16 (nnU-Net plans start at 32 features, tiny test plans lower);
- the layers are built from the plan's ``conv_op`` (1x1 convs instead of nn.Linear) so the same module
  works for 2d and 3d and is reached by nnU-Net's ``InitWeights_He`` initialisation.

Gate initialisation (``init``). ``"he"`` (default, the faithful build) leaves the gate layers to nnU-Net's
He initialisation like every other conv. ``"neutral"`` shrinks the layer that produces each gate's logit
(the MLP's output conv, the spatial conv) by ``NEUTRAL_SCALE`` and zeroes its bias after He init, so every
gate starts at ~0.5 with a non-zero gradient. Why: the logit is a sum over many inputs (C channel
descriptors, 2 x 7 x 7 spatial descriptors) of magnitude ~1-5; He init already puts 19% of the channel
gates of a 5-stage net beyond 0.01/0.99 before training, and Adagrad's first steps move every weight by
~lr whatever its gradient, which moves those sums coherently (benchmarks/attention_saturation.py). The
network calls ``reset_gate_parameters()`` after its He init (``MfNSDe.initialize``).
"""
from typing import Optional, Type

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim

ATTENTION_INITS = ("he", "neutral")
# factor applied to the He-initialised logit layer by the "neutral" init: logits start ~100x smaller
# (|logit| << 1, gate ~0.5) but the weights stay non-zero, so every parameter gets a gradient at step 1
NEUTRAL_SCALE = 1e-2


def _check_init(init: str) -> str:
    if init not in ATTENTION_INITS:
        raise ValueError(f"attention init must be one of {ATTENTION_INITS}, got {init!r}")
    return init


def _shrink_logit_layer(conv: nn.Module) -> None:
    with torch.no_grad():
        conv.weight.mul_(NEUTRAL_SCALE)
        if conv.bias is not None:
            conv.bias.zero_()


class ChannelAttention(nn.Module):
    """Channel gate: shared MLP over global average- and max-pooled descriptors, summed, sigmoid."""

    def __init__(self, conv_op: Type[_ConvNd], channels: int, reduction: int = 16, min_hidden: int = 4,
                 nonlin: Optional[Type[nn.Module]] = None, nonlin_kwargs: Optional[dict] = None,
                 init: str = "he") -> None:
        super().__init__()
        self.init = _check_init(init)
        if channels < 1:
            raise ValueError(f"ChannelAttention: channels must be >= 1, got {channels}")
        if reduction < 1 or min_hidden < 1:
            raise ValueError(f"ChannelAttention: reduction and min_hidden must be >= 1, got {reduction}, {min_hidden}")
        self.hidden = max(channels // reduction, min_hidden)
        nonlin = nn.ReLU if nonlin is None else nonlin
        self.mlp = nn.Sequential(
            conv_op(channels, self.hidden, 1, bias=True),
            nonlin(**(nonlin_kwargs or {})),
            conv_op(self.hidden, channels, 1, bias=True),
        )
        self.spatial_dims = tuple(range(2, 2 + convert_conv_op_to_dim(conv_op)))

    def reset_gate_parameters(self) -> None:
        """Apply ``self.init`` to the logit layer (called after the network's He init)."""
        if self.init == "neutral":
            _shrink_logit_layer(self.mlp[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=self.spatial_dims, keepdim=True)
        mx = x.amax(dim=self.spatial_dims, keepdim=True)
        # one MLP pass over both descriptors (stacked on the batch axis) instead of two
        both = self.mlp(torch.cat((avg, mx), 0))
        a, m = both.chunk(2, 0)
        return torch.sigmoid(a + m)


class SpatialAttention(nn.Module):
    """Spatial gate: channel mean and channel max -> kxk(xk) conv -> sigmoid."""

    def __init__(self, conv_op: Type[_ConvNd], kernel_size: int = 7, init: str = "he") -> None:
        super().__init__()
        self.init = _check_init(init)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SpatialAttention: kernel_size must be odd and >= 1, got {kernel_size}")
        self.conv = conv_op(2, 1, kernel_size, padding=kernel_size // 2, bias=True)

    def reset_gate_parameters(self) -> None:
        """Apply ``self.init`` to the logit layer (called after the network's He init)."""
        if self.init == "neutral":
            _shrink_logit_layer(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), 1)
        return torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """x -> x * channel_gate(x) -> y * spatial_gate(y) (channel first, then spatial, as in CBAM)."""

    def __init__(self, conv_op: Type[_ConvNd], channels: int, reduction: int = 16, min_hidden: int = 4,
                 spatial_kernel_size: int = 7, nonlin: Optional[Type[nn.Module]] = None,
                 nonlin_kwargs: Optional[dict] = None, init: str = "he") -> None:
        super().__init__()
        self.channel = ChannelAttention(conv_op, channels, reduction, min_hidden, nonlin, nonlin_kwargs, init)
        self.spatial = SpatialAttention(conv_op, spatial_kernel_size, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)
