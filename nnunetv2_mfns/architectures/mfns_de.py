"""MfNS_De: dense nested attention U-Net with multi-scale deep supervision, driven by nnU-Net plans.

Layout (DESIGN.md section 2). Nodes X(i, j) on a grid, i = resolution row (0 = the plan's first stage,
full resolution for the usual stride [1, 1]), j = nesting column, i + j <= n_rows - 1:

- X(i, 0) is encoder stage i, built by dynamic_network_architectures' ``PlainConvEncoder`` with the
  plan's kernel sizes, strides and convs per stage (strided conv downsampling, exactly as nnU-Net).
- X(i, j), j >= 1: ``Node_i(cat[X(i, 0..j-1), Up(X(i+1, j-1)), Down(X(i-1, j))])``, the last term
  only for i >= 1. Up = bilinear/trilinear interpolation to the exact row-i shape, Down = adaptive max
  pooling to the exact row-i shape; both hit the target size for any patch size, also one that is not
  divisible by the total stride. Nodes are evaluated diagonal by diagonal (i + j increasing), deepest
  first within a diagonal, which satisfies both dependencies.
- Node_i = nnU-Net ``StackedConvBlocks`` (plan's kernel size of stage i, convs per node from
  ``n_conv_per_stage_decoder`` for that level) followed by CBAM attention (``attention.CBAM``) when
  ``use_attention``; with attention off the network holds no attention parameters at all.
- Top (feature-pyramid fusion, as DNANet): X(0, L-1) concatenated with ``Up(conv1x1(X(i, L-1-i)))`` for
  every row i >= 1 (1x1 conv to the row-0 width), then one node (conv block + attention) and a 1x1
  segmentation head -> output 0.
- Deep supervision: a 1x1 head on the last node of every row i >= 1, X(i, L-1-i) -> output i, at scale
  ``1 / prod(strides[:i+1])``. With deep supervision on, forward returns ``n_rows`` tensors, full
  resolution first; off, only output 0. Every head exists in both modes, so weights trained with deep
  supervision load strictly into the inference network.

Cap and what happens to the deeper plan stages. The node count grows quadratically with depth and the
nested nodes run at every resolution, so the cost explodes with the plan's 7 stages and 512 features:
the prototype measurements in DESIGN.md (256x256, batch 1, fp32) are 61.6 M parameters, 90 GMACs and
1235 MiB of saved activations for 7 nested rows up to 512 features, against 33.5 M / 14.8 GMACs / 157 MiB
for nnU-Net's plain 7-stage 2d U-Net; 5 rows up to 512 features still cost 43 GMACs, 5 rows up to 256
features (DNANet's widths) 10.9 GMACs. Therefore only the first ``min(n_stages, max_nested_stages)``
plan stages are built (default 5, DNANet's and the paper's depth) and widths are capped at
``max_features`` (default 256, DNANet's widest). The deeper plan stages are dropped, i.e. the encoder
stops at the cap: they only add 16x16 and smaller maps at the plan's 384x320-like patch sizes, whose
receptive field is far beyond what a 1-3 mm perivascular space needs, and keeping them as a plain U-Net
tail would reintroduce the 512-wide bottleneck weights. ``n_rows`` and ``ds_strides`` expose what was
built; ``get_deep_supervision_scales()`` gives the matching nnU-Net deep-supervision scales, which the
trainer must use instead of nnU-Net's default (that one assumes ``n_stages - 1`` outputs).
Measured with the defaults on nnU-Net's 7-stage 32..512 2d plan (benchmarks/bench_network.py,
docs/results/network_benchmark.md, 256x256): 6.8 M parameters (0.20x PlainConvUNet), 38.8 GMACs
(2.6x), about 3.2x the forward+backward CPU time and 3.7x the activation memory; at 128x128 (2026-11-25
run, loaded box) 2.6x the CPU time and 2.1x the memory. The width cap mostly saves parameters; the compute
sits in the nested rows 0 and 1 (60% of the MACs, profile in network_benchmark.md), which the cap does not
touch, and 63% of a training step is convolution, so no numerics-preserving trick (channels_last, split
convs instead of concatenation, fused gates: each measured there) gets near nnU-Net's 2x goal. The
``input_projection`` + ``attention_from_row=1`` variant (``_Fast``, a different network) does: 0.35x the
MACs, 1.56x PlainConvUNet's CPU time, 1.58x its memory (128x128).

Switches (all off = the faithful build used since the start; each has a trainer in
trainers/variants_network.py and a test in tests/test_network.py):
- ``node_block="res_cbam"``: DNANet's Res-CBAM node, ``nonlin(CBAM(convs(x)) + shortcut(x))`` (nested_blocks).
- ``attention_init="neutral"``: gate logit layers shrunk after He init, gates start at ~0.5 (attention).
- ``attention_from_row=1``: no attention on the full-resolution row and the fusion block.
- ``input_projection=True``: each node's first conv 1x1 (the `fast` variant's MAC cut; not the paper's).
- ``checkpoint_nodes=True``: activation checkpointing of nodes and fusion (same numbers, less memory).
The decoder (grid, fusion, heads) is in nested_decoder.py, the node blocks in nested_blocks.py.

Output sizes. Row shapes follow the strided convs (ceil division). nnU-Net makes the deep-supervision
targets with ``round(size * scale)`` (``DownsampleSegForDSTransform``); where the two differ (only for
patch sizes not divisible by the total stride) a head's logits are resized (bilinear/trilinear) to the
target size so that the loss pairs tensors of equal shape. For plan patch sizes nothing is resized.
"""
import pydoc
from typing import List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He

from nnunetv2_mfns.architectures.attention import ATTENTION_INITS
from nnunetv2_mfns.architectures.nested_blocks import NODE_BLOCKS
from nnunetv2_mfns.architectures.nested_decoder import SUPPORTED_DIMS as _SUPPORTED_DIMS
from nnunetv2_mfns.architectures.nested_decoder import MfNSDeDecoder, deep_supervision_scales

__all__ = ["MfNSDe", "MfNSDeDecoder", "deep_supervision_scales"]

IntOrSeq = Union[int, List[int], Tuple[int, ...]]


def _resolve_class(value, name: str, allow_none: bool):
    """Accept a class or a dotted string (as in nnU-Net plans); get_network_from_plans resolves strings
    itself, direct callers may pass them too."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"MfNSDe: {name} must be given (a class or a dotted class name), got None")
    if isinstance(value, str):
        located = pydoc.locate(value)
        if located is None:
            raise ValueError(f"MfNSDe: {name}={value!r} cannot be imported")
        value = located
    if not isinstance(value, type):
        raise ValueError(f"MfNSDe: {name} must be a class or a dotted class name, got {value!r}")
    return value


def _per_stage(value, n: int, name: str) -> list:
    """int -> [int] * n; sequence -> list, length checked."""
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"MfNSDe: {name} must be an int or a list of {n} entries, got {value!r}")
    value = list(value)
    if len(value) != n:
        raise ValueError(f"MfNSDe: {name} has {len(value)} entries but {n} are required")
    return value


def _per_stage_vectors(value, n: int, dim: int, name: str) -> List[List[int]]:
    """Per-stage kernel sizes / strides: each entry an int or a list of ``dim`` ints, all >= 1."""
    if isinstance(value, (int, np.integer)):
        value = [int(value)] * n
    value = _per_stage(value, n, name)
    out = []
    for s, v in enumerate(value):
        v = [int(v)] * dim if isinstance(v, (int, np.integer)) else [int(i) for i in v]
        if len(v) != dim:
            raise ValueError(f"MfNSDe: {name}[{s}]={v} has {len(v)} entries, the {dim}d conv_op needs {dim}")
        if any(i < 1 for i in v):
            raise ValueError(f"MfNSDe: {name}[{s}]={v} must be >= 1 everywhere")
        out.append(v)
    return out


class MfNSDe(AbstractDynamicNetworkArchitectures):
    """MfNS_De (Cai et al. 2024) for nnU-Net; the constructor mirrors ``PlainConvUNet``.

    Extra keyword switches:
        use_attention: CBAM after every nested node and the fusion block (False: no attention params).
        max_nested_stages: build only the first ``min(n_stages, max_nested_stages)`` plan stages (rows).
        max_features: cap on every row's width (``min(features_per_stage[i], max_features)``).
        attention_reduction / attention_min_hidden: channel-MLP hidden width
            ``max(C // attention_reduction, attention_min_hidden)``.
        attention_kernel_size: kernel of the spatial-attention conv (CBAM: 7).
        node_block: "conv_cbam" (default: conv block, then CBAM) or "res_cbam" (DNANet's Res-CBAM block:
            residual shortcut around conv block + attention); see ``nested_blocks``.
        attention_init: "he" (default) or "neutral" (gate logit layers shrunk after He init so gates
            start at ~0.5 instead of saturated); see ``attention``.
        attention_from_row: only nodes of rows >= this carry attention (0 = all; the fusion block counts as
            row 0). 1 = the `fast` variant: no attention at full resolution.
        input_projection: every nested node's (and the fusion block's) first conv is 1x1 instead of the
            plan's kernel (the `fast` variant's MAC cut; see ``nested_blocks``). Not the paper's network.
        checkpoint_nodes: recompute the nested nodes and the fusion in the backward pass (activation
            checkpointing): the same outputs and gradients, less training memory, more time.

    See the module docstring for the layout, the cap and the output sizes.
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage: IntOrSeq,
        conv_op: Type[_ConvNd],
        kernel_sizes: IntOrSeq,
        strides: IntOrSeq,
        n_conv_per_stage: IntOrSeq,
        num_classes: int,
        n_conv_per_stage_decoder: IntOrSeq,
        conv_bias: bool = False,
        norm_op: Union[None, Type[nn.Module]] = None,
        norm_op_kwargs: Optional[dict] = None,
        dropout_op: Union[None, Type[_DropoutNd]] = None,
        dropout_op_kwargs: Optional[dict] = None,
        nonlin: Union[None, Type[nn.Module]] = None,
        nonlin_kwargs: Optional[dict] = None,
        deep_supervision: bool = False,
        nonlin_first: bool = False,
        use_attention: bool = True,
        max_nested_stages: int = 5,
        max_features: int = 256,
        attention_reduction: int = 16,
        attention_min_hidden: int = 4,
        attention_kernel_size: int = 7,
        node_block: str = "conv_cbam",
        attention_init: str = "he",
        attention_from_row: int = 0,
        input_projection: bool = False,
        checkpoint_nodes: bool = False,
    ) -> None:
        super().__init__()
        conv_op = _resolve_class(conv_op, "conv_op", allow_none=False)
        if conv_op not in _SUPPORTED_DIMS:
            raise ValueError(f"MfNSDe: conv_op must be torch.nn.Conv2d or torch.nn.Conv3d, got {conv_op!r} "
                             "(the nested grid resamples with 2d/3d interpolation and pooling)")
        norm_op = _resolve_class(norm_op, "norm_op", allow_none=True)
        dropout_op = _resolve_class(dropout_op, "dropout_op", allow_none=True)
        nonlin = _resolve_class(nonlin, "nonlin", allow_none=True)
        dim = _SUPPORTED_DIMS[conv_op]

        if not isinstance(n_stages, (int, np.integer)) or n_stages < 2:
            raise ValueError(f"MfNSDe: n_stages must be an int >= 2 (a nested grid needs two rows), got {n_stages!r}")
        if not isinstance(max_nested_stages, (int, np.integer)) or max_nested_stages < 2:
            raise ValueError(f"MfNSDe: max_nested_stages must be an int >= 2, got {max_nested_stages!r}")
        if not isinstance(max_features, (int, np.integer)) or max_features < 1:
            raise ValueError(f"MfNSDe: max_features must be an int >= 1, got {max_features!r}")
        if node_block not in NODE_BLOCKS:
            raise ValueError(f"MfNSDe: node_block must be one of {NODE_BLOCKS}, got {node_block!r}")
        if attention_init not in ATTENTION_INITS:
            raise ValueError(f"MfNSDe: attention_init must be one of {ATTENTION_INITS}, got {attention_init!r}")
        if not isinstance(attention_from_row, (int, np.integer)) or attention_from_row < 0:
            raise ValueError(f"MfNSDe: attention_from_row must be an int >= 0, got {attention_from_row!r}")
        if not isinstance(input_channels, (int, np.integer)) or input_channels < 1:
            raise ValueError(f"MfNSDe: input_channels must be an int >= 1, got {input_channels!r}")
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"MfNSDe: num_classes must be an int >= 1, got {num_classes!r}")

        features = _per_stage(features_per_stage, n_stages, "features_per_stage")
        if any(int(f) < 1 for f in features):
            raise ValueError(f"MfNSDe: features_per_stage must be >= 1 everywhere, got {features}")
        kernel_sizes = _per_stage_vectors(kernel_sizes, n_stages, dim, "kernel_sizes")
        if any(k % 2 == 0 for ks in kernel_sizes for k in ks):
            raise ValueError(f"MfNSDe: kernel_sizes must be odd (same padding), got {kernel_sizes}")
        strides = _per_stage_vectors(strides, n_stages, dim, "strides")
        n_conv = [int(c) for c in _per_stage(n_conv_per_stage, n_stages, "n_conv_per_stage")]
        n_conv_dec = [int(c) for c in _per_stage(n_conv_per_stage_decoder, n_stages - 1, "n_conv_per_stage_decoder")]
        if any(c < 1 for c in n_conv + n_conv_dec):
            raise ValueError("MfNSDe: n_conv_per_stage and n_conv_per_stage_decoder must be >= 1 everywhere")

        self.n_stages_plan = int(n_stages)
        self.n_rows = int(min(n_stages, max_nested_stages))
        self.max_nested_stages = int(max_nested_stages)
        self.max_features = int(max_features)
        self.use_attention = bool(use_attention)
        self.node_block = node_block
        self.attention_init = attention_init
        self.attention_from_row = int(attention_from_row)
        self.input_projection = bool(input_projection)
        self.checkpoint_nodes = bool(checkpoint_nodes)
        self.widths = [int(min(f, max_features)) for f in features[: self.n_rows]]
        self.ds_strides = [list(s) for s in strides[: self.n_rows]]
        self.num_classes = int(num_classes)

        # same keys as PlainConvUNet so nnU-Net's pretrained-weight tooling finds encoder and stem
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stages.0"
        self.keys_to_in_proj = ("encoder.stages.0.0.convs.0.all_modules.0", "encoder.stages.0.0.convs.0.conv")

        self.encoder = PlainConvEncoder(
            input_channels, self.n_rows, self.widths, conv_op, kernel_sizes[: self.n_rows], self.ds_strides,
            n_conv[: self.n_rows], conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin,
            nonlin_kwargs, return_skips=True, nonlin_first=nonlin_first)
        # nnU-Net orders n_conv_per_stage_decoder from the deepest decoder level up: entry k belongs to
        # resolution level n_stages - 2 - k. Row i of the grid is level i.
        n_conv_per_row = [n_conv_dec[n_stages - 2 - i] for i in range(self.n_rows - 1)]
        self.decoder = MfNSDeDecoder(self.encoder, self.num_classes, n_conv_per_row, bool(deep_supervision),
                                     self.use_attention, nonlin_first, attention_reduction,
                                     attention_min_hidden, attention_kernel_size, node_block, attention_init,
                                     int(attention_from_row), bool(input_projection), bool(checkpoint_nodes))

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        return self.decoder(self.encoder(x), x.shape[2:])

    def get_deep_supervision_scales(self) -> List[List[float]]:
        """Scales of the outputs returned with deep supervision on (full resolution first, one per row);
        pass them to nnU-Net (``_get_deep_supervision_scales``) so targets and outputs pair up."""
        return deep_supervision_scales(self.ds_strides, self.n_rows, self.n_rows)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        if len(input_size) != _SUPPORTED_DIMS[self.encoder.conv_op]:
            raise ValueError("MfNSDe.compute_conv_feature_map_size: give the spatial size only, "
                             f"e.g. (x, y) for 2d, got {tuple(input_size)}")
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        # nnU-Net applies this with network.apply, children before parents, so an attention module sees
        # its convs already He-initialised and can rescale its gate layer afterwards
        InitWeights_He(1e-2)(module)
        if hasattr(module, "reset_gate_parameters"):
            module.reset_gate_parameters()
