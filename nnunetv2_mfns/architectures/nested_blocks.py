"""The node blocks of MfNS_De's nested grid (one node = one X(i, j), j >= 1, and the fusion block).

Two node types, switched by ``MfNSDe(node_block=...)``:

- ``"conv_cbam"`` (default, the build this project has used since the start): nnU-Net's
  ``StackedConvBlocks`` (conv-norm-nonlin, ``n_conv`` times) followed by CBAM. The module is an
  ``nn.Sequential`` (index 0 the convs, 1 the CBAM), so its state-dict keys are those of every checkpoint
  trained so far.
- ``"res_cbam"``: DNANet's Res-CBAM block as its public code applies it (``Res_CBAM_block`` in
  ``model/model_DNANet.py``): conv-norm-nonlin ... conv-norm (no nonlin after the last conv), channel gate,
  spatial gate, plus a shortcut (1x1 conv + norm, since a node's concatenated input is always wider than
  its output), then the nonlin: ``out = nonlin(attn(convs(x)) + shortcut(x))``. The structure is
  dynamic_network_architectures' ``BasicBlockD`` (ResNet-D basic block) with CBAM in place of its
  squeeze-excitation and ``n_conv`` convs in the main path. Why it matters: the gates then act on
  normalised pre-activations (not on post-LeakyReLU maps whose max descriptors are large), and a
  saturated gate no longer blocks the signal, because the shortcut carries it.

Both reuse dynamic_network_architectures' ``ConvDropoutNormReLU`` / ``StackedConvBlocks``, so nnU-Net's
plans (norm, nonlin, dropout, conv bias, kernel sizes) drive them unchanged.

``input_projection=True`` (the `fast` variant of issue 14, not the paper's network): a node's first conv
is 1x1 instead of the plan's kernel. The first conv reads the whole dense concatenation (up to
``(L-1) * w + w_below + w_above`` channels), so with 3x3 kernels it holds most of the grid's MACs; as
1x1 it only mixes the concatenation down to the row width, and the node's remaining convs (the plan's
kernel) do the spatial work (DenseNet-BC's bottleneck). With ``n_conv == 1`` the node is then 1x1 only.
"""
from typing import List, Optional, Type, Union

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU, StackedConvBlocks

from nnunetv2_mfns.architectures.attention import CBAM

NODE_BLOCKS = ("conv_cbam", "res_cbam")


class ConvCBAMNode(nn.Sequential):
    """StackedConvBlocks followed by CBAM (or nothing when attention is off)."""

    def __init__(self, conv: StackedConvBlocks, attention: Optional[CBAM]) -> None:
        super().__init__(*([conv] if attention is None else [conv, attention]))
        self.output_channels = conv.output_channels

    def compute_conv_feature_map_size(self, input_size: List[int]) -> np.int64:
        total = self[0].compute_conv_feature_map_size(input_size)
        if len(self) > 1:  # two gated maps + spatial descriptor (2 channels) and gate (1)
            vox = int(np.prod(input_size, dtype=np.int64))
            total += 2 * self.output_channels * vox + 3 * vox
        return np.int64(total)


class ResCBAMNode(nn.Module):
    """DNANet's Res-CBAM block: ``nonlin(attention(convs(x)) + shortcut(x))``, nnU-Net building blocks."""

    def __init__(self, n_conv: int, conv_op: Type[_ConvNd], input_channels: int, output_channels: int,
                 kernel_size: Union[int, List[int]], conv_bias: bool, norm_op: Optional[Type[nn.Module]],
                 norm_op_kwargs: Optional[dict], dropout_op: Optional[Type[nn.Module]], dropout_op_kwargs: Optional[dict],
                 nonlin: Optional[Type[nn.Module]], nonlin_kwargs: Optional[dict], attention: Optional[CBAM]) -> None:
        super().__init__()
        if n_conv < 1:
            raise ValueError(f"ResCBAMNode: n_conv must be >= 1, got {n_conv}")
        self.input_channels = input_channels
        self.output_channels = output_channels
        convs = []
        for k in range(n_conv):
            last = k == n_conv - 1
            # the last conv has no nonlin: it comes after the residual sum, as in DNANet and BasicBlockD
            convs.append(ConvDropoutNormReLU(
                conv_op, input_channels if k == 0 else output_channels, output_channels, kernel_size, 1, conv_bias,
                norm_op, norm_op_kwargs, dropout_op if not last else None, dropout_op_kwargs if not last else None,
                None if last else nonlin, None if last else nonlin_kwargs))
        self.convs = nn.Sequential(*convs)
        self.attention = attention
        # DNANet: 1x1 conv + BN when the width changes; nnU-Net's BasicBlockD: the same without conv bias
        self.skip = (ConvDropoutNormReLU(conv_op, input_channels, output_channels, 1, 1, False, norm_op, norm_op_kwargs,
                                         None, None, None, None)
                     if input_channels != output_channels else nn.Identity())
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        if self.attention is not None:
            out = self.attention(out)
        # not in place: with an in-place LeakyReLU after it, autograd still needs both summands' graph intact
        return self.nonlin(out + self.skip(x))

    def compute_conv_feature_map_size(self, input_size: List[int]) -> np.int64:
        vox = int(np.prod(input_size, dtype=np.int64))
        total = len(self.convs) * self.output_channels * vox
        if not isinstance(self.skip, nn.Identity):
            total += self.output_channels * vox
        if self.attention is not None:
            total += 2 * self.output_channels * vox + 3 * vox
        total += self.output_channels * vox  # residual sum
        return np.int64(total)


class ResCBAMStack(nn.Sequential):
    """Several Res-CBAM blocks in a row, as DNANet's ``_make_layer(block, in, out, num_blocks)``: the first
    maps the input width to the output width, the others keep it."""

    def __init__(self, blocks: List[ResCBAMNode]) -> None:
        super().__init__(*blocks)
        self.input_channels = blocks[0].input_channels
        self.output_channels = blocks[-1].output_channels

    def compute_conv_feature_map_size(self, input_size: List[int]) -> np.int64:
        return np.int64(sum(b.compute_conv_feature_map_size(input_size) for b in self))


def _first_conv_1x1(convs: nn.Sequential, conv_op: Type[_ConvNd], block_kwargs: dict, last_has_nonlin: bool) -> None:
    """Replace ``convs[0]`` by the same ConvDropoutNormReLU with a 1x1 kernel (same input/output widths)."""
    first = convs[0]
    kw = dict(block_kwargs)
    if not last_has_nonlin and len(convs) == 1:  # a Res-CBAM node's only conv keeps its missing nonlin
        kw.update(nonlin=None, nonlin_kwargs=None, dropout_op=None, dropout_op_kwargs=None)
    if "nonlin_first" not in kw:
        kw["nonlin_first"] = False
    convs[0] = ConvDropoutNormReLU(conv_op, first.input_channels, first.output_channels, 1, 1, **kw)


def make_node(node_block: str, n_conv: int, conv_op: Type[_ConvNd], input_channels: int, output_channels: int,
              kernel_size: Union[int, List[int]], block_kwargs: dict, attention_kwargs: Optional[dict],
              input_projection: bool = False, n_blocks: int = 1) -> nn.Module:
    """One nested node or the fusion block. ``attention_kwargs=None``: no attention (no parameters).

    ``n_blocks`` (``res_cbam`` only): Res-CBAM blocks in a row (DNANet: 1 on the full-resolution row, 2 on the
    others); 1 returns the block itself, so single-block nodes keep the state-dict keys of earlier checkpoints.

    ``block_kwargs``: conv_bias, norm_op(+kwargs), dropout_op(+kwargs), nonlin(+kwargs), nonlin_first, as
    StackedConvBlocks takes them. ``attention_kwargs``: CBAM's keyword arguments. ``input_projection``:
    first conv 1x1 (module docstring).
    """
    attention = None if attention_kwargs is None else CBAM(conv_op, output_channels, **attention_kwargs)
    if node_block == "conv_cbam":
        if n_blocks != 1:
            raise ValueError(f"MfNSDe: node_block 'conv_cbam' takes its depth from n_conv (n_blocks must be 1), "
                             f"got {n_blocks}")
        conv = StackedConvBlocks(n_conv, conv_op, input_channels, output_channels, kernel_size, 1, **block_kwargs)
        if input_projection:
            _first_conv_1x1(conv.convs, conv_op, block_kwargs, last_has_nonlin=True)
        return ConvCBAMNode(conv, attention)
    if node_block == "res_cbam":
        if n_blocks < 1:
            raise ValueError(f"MfNSDe: a Res-CBAM node needs n_blocks >= 1, got {n_blocks}")
        kw = {k: v for k, v in block_kwargs.items() if k != "nonlin_first"}
        blocks = []
        for b in range(n_blocks):
            # every block has its own gates (DNANet: one CBAM per Res_CBAM_block)
            att = attention if b == 0 else (None if attention_kwargs is None else
                                            CBAM(conv_op, output_channels, **attention_kwargs))
            blocks.append(ResCBAMNode(n_conv, conv_op, input_channels if b == 0 else output_channels, output_channels,
                                      kernel_size, attention=att, **kw))
        if input_projection:
            _first_conv_1x1(blocks[0].convs, conv_op, kw, last_has_nonlin=False)
        return blocks[0] if n_blocks == 1 else ResCBAMStack(blocks)
    raise ValueError(f"MfNSDe: node_block must be one of {NODE_BLOCKS}, got {node_block!r}")
