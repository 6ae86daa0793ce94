"""MfNS_De's decoder: the nested grid X(i, j >= 1), the feature-pyramid fusion and the segmentation heads.

Layout and evaluation order: see ``nnunetv2_mfns.architectures.mfns_de`` (module docstring). The node
blocks live in ``nested_blocks``, the attention in ``attention``.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder

from nnunetv2_mfns.architectures.nested_blocks import make_node

SUPPORTED_DIMS = {nn.Conv2d: 2, nn.Conv3d: 3}
_INTERP_MODE = {2: "bilinear", 3: "trilinear"}


def deep_supervision_scales(strides: Sequence, n_stages: Optional[int] = None,
                            max_nested_stages: int = 5) -> List[List[float]]:
    """nnU-Net-style deep-supervision scales of an MfNSDe built from these plan strides.

    One scale per built row, full resolution first: ``1 / cumprod(strides)[:n_rows]`` with
    ``n_rows = min(n_stages, max_nested_stages)``, the same arithmetic as nnU-Net's
    ``_get_deep_supervision_scales`` (which instead drops only the last stage). Usable by a trainer
    before the network exists, e.g. with ``configuration_manager.pool_op_kernel_sizes``.
    """
    n_stages = len(strides) if n_stages is None else n_stages
    n_rows = min(n_stages, max_nested_stages)
    scales = 1 / np.cumprod(np.vstack([np.atleast_1d(s) for s in strides[:n_rows]]), axis=0)
    return [[float(v) for v in row] for row in scales]


RESAMPLE_MODES = ("dnanet", "v1")


def deep_supervision_layout(strides: Sequence, n_stages: Optional[int] = None, max_nested_stages: int = 5,
                            full_resolution_heads: bool = True) -> Tuple[List[List[float]], List[float]]:
    """Scales and loss weights of the outputs an MfNSDe returns with deep supervision on, in output order.

    Without ``full_resolution_heads``: one output per row (the fused output, then a head on the last node of
    every coarser row), weights ``1/2^i`` normalised. With them (the faithful build): DNANet's full-resolution
    side heads on X(0, 1) .. X(0, L-2) come right after the fused output, all at scale 1, and share scale 0's
    weight equally (DNANet averages its full-resolution heads); the coarse heads keep ``1/2^i`` on HF targets.
    """
    per_row = deep_supervision_scales(strides, n_stages, max_nested_stages)
    n_rows = len(per_row)
    n_full = n_rows - 1 if full_resolution_heads else 1
    scales = [per_row[0]] * n_full + per_row[1:]
    weights = [1.0 / n_full] * n_full + [1.0 / 2 ** i for i in range(1, n_rows)]
    total = sum(weights)
    return scales, [w / total for w in weights]


class MfNSDeDecoder(nn.Module):
    """Nested nodes, fusion and heads. Named ``decoder`` in the network so that nnU-Net's stock
    ``set_deep_supervision_enabled`` (which sets ``network.decoder.deep_supervision``) works.

    ``attention_from_row``: only nodes of rows >= this carry attention (the fusion block, which works at row
    0, counts as row 0). ``input_projection``: every node's first conv is 1x1 (``nested_blocks``).
    ``checkpoint_nodes``: in training, each nested node (its resampling, concatenation, convs and gates) and
    the fusion are recomputed in the backward pass instead of keeping their intermediate maps (torch's
    non-reentrant activation checkpointing). Same numbers (the recomputation runs the same ops on the same
    inputs; instance norm keeps no running statistics), less activation memory, more time. ``node_block`` and ``attention_init``: see ``nested_blocks`` and
    ``attention``.
    """

    def __init__(self, encoder: PlainConvEncoder, num_classes: int, n_conv_per_row: List[int],
                 deep_supervision: bool, use_attention: bool, nonlin_first: bool,
                 attention_reduction: int, attention_min_hidden: int, attention_kernel_size: int,
                 node_block: str = "conv_cbam", attention_init: str = "he",
                 attention_from_row: int = 0, input_projection: bool = False,
                 checkpoint_nodes: bool = False, blocks_per_row: Optional[Sequence[int]] = None,
                 resample: str = "v1", full_resolution_heads: bool = False) -> None:
        super().__init__()
        if resample not in RESAMPLE_MODES:
            raise ValueError(f"MfNSDe: resample must be one of {RESAMPLE_MODES}, got {resample!r}")
        self.resample = resample
        self.full_resolution_heads = bool(full_resolution_heads)
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        self.use_attention = use_attention
        self.node_block = node_block
        self.checkpoint_nodes = checkpoint_nodes
        self.conv_op = encoder.conv_op
        self.dim = SUPPORTED_DIMS[encoder.conv_op]
        self.widths = list(encoder.output_channels)
        self.n_rows = len(self.widths)
        self.strides = encoder.strides
        self.n_conv_per_row = n_conv_per_row
        L = self.n_rows
        w = self.widths
        self.attention_rows = list(range(attention_from_row, L)) if use_attention else []
        self.blocks_per_row = [1] * L if blocks_per_row is None else [int(b) for b in blocks_per_row]
        if len(self.blocks_per_row) != L:
            raise ValueError(f"MfNSDe: blocks_per_row needs {L} entries (one per row), got {self.blocks_per_row}")

        block_kwargs = dict(conv_bias=encoder.conv_bias, norm_op=encoder.norm_op,
                            norm_op_kwargs=encoder.norm_op_kwargs, dropout_op=encoder.dropout_op,
                            dropout_op_kwargs=encoder.dropout_op_kwargs, nonlin=encoder.nonlin,
                            nonlin_kwargs=encoder.nonlin_kwargs, nonlin_first=nonlin_first)
        att_kwargs = dict(reduction=attention_reduction, min_hidden=attention_min_hidden,
                          spatial_kernel_size=attention_kernel_size, nonlin=encoder.nonlin,
                          nonlin_kwargs=encoder.nonlin_kwargs, init=attention_init)

        def node(in_ch: int, row: int) -> nn.Module:
            att = att_kwargs if row in self.attention_rows else None
            return make_node(node_block, n_conv_per_row[row], self.conv_op, in_ch, w[row], encoder.kernel_sizes[row],
                             block_kwargs, att, input_projection, self.blocks_per_row[row])

        # nodes[i][j - 1] is X(i, j); row i has columns 1 .. L-1-i
        self.nodes = nn.ModuleList(
            [nn.ModuleList([node(self.node_in_channels(i, j), i) for j in range(1, L - i)]) for i in range(L - 1)])

        # fusion: 1x1 projection of the last node of rows 1..L-1 to the row-0 width
        self.fusion_proj = nn.ModuleList(
            [self.conv_op(w[i], w[0], 1, 1, 0, bias=encoder.conv_bias) for i in range(1, L)])
        self.fusion = node(L * w[0], 0)

        # seg_layers[0]: fused output; seg_layers[i]: head on X(i, L-1-i). All built in both modes.
        self.seg_layers = nn.ModuleList(
            [self.conv_op(w[0], num_classes, 1, 1, 0, bias=True)] +
            [self.conv_op(w[i], num_classes, 1, 1, 0, bias=True) for i in range(1, L)])
        # DNANet's full-resolution side heads on X(0, 1) .. X(0, L-2) (its final1..final3); absent in the v1 build
        # so that v1 checkpoints keep their keys
        if self.full_resolution_heads:
            self.row0_heads = nn.ModuleList([self.conv_op(w[0], num_classes, 1, 1, 0, bias=True)
                                             for _ in range(1, L - 1)])

        # scales as nnU-Net computes them (float64), used for the exact DS target sizes
        self.scales = deep_supervision_scales(self.strides, L, L)

    def node_in_channels(self, i: int, j: int) -> int:
        """Input width of X(i, j): j same-row nodes, the upsampled deeper row, the downsampled shallower row."""
        w = self.widths
        return j * w[i] + w[i + 1] + (w[i - 1] if i >= 1 else 0)

    def _up(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if list(x.shape[2:]) == list(size):
            return x
        # DNANet: nn.Upsample(bilinear, align_corners=True); v1: align_corners=False
        return F.interpolate(x, size=tuple(size), mode=_INTERP_MODE[self.dim],
                             align_corners=self.resample == "dnanet")

    def _down(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if self.resample == "dnanet":  # DNANet: nn.Upsample(scale_factor=0.5, bilinear, align_corners=True)
            return F.interpolate(x, size=tuple(size), mode=_INTERP_MODE[self.dim], align_corners=True)
        # v1: adaptive pooling hits the exact row shape; for sizes that are multiples of the stride it is
        # plain max pooling with kernel = stride
        pool = F.adaptive_max_pool2d if self.dim == 2 else F.adaptive_max_pool3d
        return pool(x, tuple(size))

    def target_shape(self, row: int, input_shape: Sequence[int]) -> List[int]:
        """Spatial size of output ``row`` = nnU-Net's DS target size for an input of ``input_shape``."""
        return [max(1, int(round(n * s))) for n, s in zip(input_shape, self.scales[row])]

    def _node(self, i: int, j: int, shape: List[int], *inputs: torch.Tensor) -> torch.Tensor:
        """X(i, j) from X(i, 0..j-1), X(i+1, j-1) and (rows >= 1) X(i-1, j), in that order."""
        parts = list(inputs[:j])
        parts.append(self._up(inputs[j], shape))
        if i >= 1:
            parts.append(self._down(inputs[j + 1], shape))
        return self.nodes[i][j - 1](torch.cat(parts, 1))

    def _head(self, layer: nn.Module, x: torch.Tensor, row: int, input_shape: Sequence[int]) -> torch.Tensor:
        return self._up(layer(x), self.target_shape(row, input_shape))

    def _fuse(self, shape: List[int], *last: torch.Tensor) -> torch.Tensor:
        fused = [last[0]] + [self._up(self.fusion_proj[i - 1](last[i]), shape) for i in range(1, len(last))]
        return self.fusion(torch.cat(fused, 1))

    def _run(self, fn, *args):
        if self.checkpoint_nodes and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(self, skips: List[torch.Tensor], input_shape: Sequence[int]):
        L = self.n_rows
        X = {(i, 0): skips[i] for i in range(L)}
        shapes = [list(s.shape[2:]) for s in skips]
        for d in range(1, L):
            for i in range(d - 1, -1, -1):  # deepest first within the diagonal
                j = d - i
                inputs = [X[(i, k)] for k in range(j)] + [X[(i + 1, j - 1)]] + ([X[(i - 1, j)]] if i >= 1 else [])
                X[(i, j)] = self._run(self._node, i, j, shapes[i], *inputs)

        last = [X[(i, L - 1 - i)] for i in range(L)]
        fused = self._run(self._fuse, shapes[0], *last)
        out0 = self._head(self.seg_layers[0], fused, 0, input_shape)
        if not self.deep_supervision:
            return out0
        outs = [out0]
        if self.full_resolution_heads:
            outs += [self._head(h, X[(0, j)], 0, input_shape) for j, h in enumerate(self.row0_heads, start=1)]
        outs += [self._head(self.seg_layers[i], last[i], i, input_shape) for i in range(1, L)]
        return outs

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Approximate voxel count of the decoder's feature maps (node inputs, conv outputs, attention,
        fusion, heads), counted the way dynamic_network_architectures does (floor division sizes)."""
        sizes = []
        size = list(input_size)
        for s in self.strides:
            size = [a // b for a, b in zip(size, s)]
            sizes.append(size)
        L, w = self.n_rows, self.widths
        vox = [int(np.prod(s, dtype=np.int64)) for s in sizes]
        total = np.int64(0)
        for i in range(L - 1):
            for j in range(1, L - i):
                total += (self.node_in_channels(i, j) - j * w[i]) * vox[i]  # resampled inputs + the concatenation
                total += self.nodes[i][j - 1].compute_conv_feature_map_size(sizes[i])
        total += (L - 1) * w[0] * vox[0] + sum((w[0] * vox[i] for i in range(1, L)), 0)  # projections
        total += L * w[0] * vox[0]  # concatenation
        total += self.fusion.compute_conv_feature_map_size(sizes[0])
        total += self.num_classes * vox[0]
        if self.deep_supervision:
            total += sum((self.num_classes * vox[i] for i in range(1, L)), 0)
            if self.full_resolution_heads:
                total += (L - 2) * self.num_classes * vox[0]
        return np.int64(total)
