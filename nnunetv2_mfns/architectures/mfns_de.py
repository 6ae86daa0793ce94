"""MfNS_De: dense nested attention U-Net with multi-scale deep supervision, driven by nnU-Net plans.

The default build is DNANet's network (Li et al. 2022, IEEE TIP, public code ``model/model_DNANet.py``, which
MfNS_De extends) with MfNS_De's multi-scale HF deep supervision added, built from an nnU-Net plan. Layout: nodes
X(i, j) on a grid, i = resolution row (0 = the plan's first stage, full resolution for the usual stride [1, 1]),
j = nesting column, i + j <= L - 1 with L = ``n_rows``:

- X(i, 0), the encoder column (``nested_encoder.ResCBAMEncoder``): X(0, 0) = Res-CBAM block(s) on the input,
  X(i, 0) = Res-CBAM blocks on X(i-1, 0) max-pooled by the plan's stride of stage i.
- X(i, j), j >= 1: ``Node_i(cat[X(i, 0..j-1), Up(X(i+1, j-1)), Down(X(i-1, j))])``, the last term only for
  i >= 1; Up and Down are bilinear/trilinear interpolation to the exact row-i shape (align_corners=True, as
  DNANet's ``nn.Upsample``). Nodes are evaluated diagonal by diagonal (i + j increasing), deepest first.
- A node is ``blocks_per_row[i]`` Res-CBAM blocks (``nested_blocks``): ``nonlin(CBAM(convs(x)) + shortcut(x))``,
  convs = the plan's ``n_conv_per_stage_decoder`` convs with the plan's kernel, norm and nonlin; DNANet's
  ``num_blocks``: 1 block on row 0, 2 on the others (encoder column included).
- Widths: DNANet's ``[16, 32, 64, 128, 256]`` capped by the plan (``min(plan, DNANet)`` per row).
- Fusion (DNANet's feature pyramid): X(0, L-1) concatenated with ``Up(conv1x1(X(i, L-1-i)))`` for every row
  i >= 1, then one Res-CBAM block and a 1x1 head -> output 0 (DNANet's ``final4``).
- Deep supervision (``nested_decoder.deep_supervision_layout``): output 0, then DNANet's full-resolution side
  heads on X(0, 1) .. X(0, L-2) (its ``final1..final3``), then MfNS_De's multi-scale heads: a 1x1 head on the
  last node of every row i >= 1, X(i, L-1-i), at scale ``1 / prod(strides[:i+1])`` against HF targets. Loss
  weights: the L-1 full-resolution outputs share scale 0's weight equally (DNANet averages its heads), row i
  has 1/2^i (nnU-Net), normalised. With deep supervision off, forward returns output 0 only; every head exists
  in both modes, so weights trained with deep supervision load strictly into the inference network.

Departures from DNANet, each with its reason (tests/test_network_dnanet.py runs an independently written DNANet
forward pass with copied weights against this build with BatchNorm/ReLU and finds the four full-resolution
outputs equal to 1e-15; the rows below are what that test has to encode or configure away):

| departure | DNANet | here | why / measurement |
|---|---|---|---|
| multi-scale heads on X(i, L-1-i), HF targets | none (4 full-res heads) | added after DNANet's 4 | the paper's method (MfNS_De = DNANet + multi-scale HF deep supervision) |
| norm, nonlin, conv bias, kernel size, convs per block, dropout | BatchNorm, ReLU, bias, 3x3, 2, none | the plan's (instance norm, LeakyReLU, bias, 3x3, 2, none) | nnU-Net plans drive every network alike; batch 4 makes batch statistics noisy; the reference test sets BatchNorm/ReLU and matches |
| downsampling window | 2x2 max pool | max pool with the plan's stride (ceil mode) | anisotropic plans ([2, 1] strides) and sizes not divisible by 2 |
| depth | 5 rows | ``min(plan stages, max_nested_stages=5)`` rows | shallower plans (small patches) have fewer stages |
| widths | 16..256 | ``min(plan, 16..256)`` | a plan narrower than DNANet is not widened |
| channel-MLP hidden width | C // 16 (0 for C < 16) | ``max(C // 16, 4)`` | DNANet's breaks below 16 channels (row 0 of a 16-wide plan); equal for C >= 64 |
| gate convs' bias | none | bias (He init, zero) | shared CBAM module with the v1 build; a learnable offset of the gate logit; zeroed in the reference test |
| shortcut conv bias | bias | none | a bias before a norm is cancelled by it (nnU-Net's BasicBlockD does the same) |
| output sizes | equal to input | heads resized to nnU-Net's DS target sizes | only for patch sizes not divisible by the total stride |

The v1 build (``V1_BUILD``; trainer ``nnUNetTrainerMfNSDe_V1``; every MfNS_De result committed before issue 22)
is nnU-Net's PlainConvEncoder (strided convs, no attention), conv block -> CBAM nodes without shortcut, plan
widths capped at 256 ([32, 64, 128, 256, 256]), adaptive-max-pool Down and align_corners=False Up, and one head
per row (the fused output and X(i, L-1-i)). Side by side on one CPU thread (docs/results/network_benchmark_faithful.md,
batch 2): the faithful build has 4.7 M parameters against v1's 6.8 M, 0.36x its forward MACs, 0.52-0.58x its
CPU time per forward+backward and 0.72x its activation memory; against nnU-Net's PlainConvUNet on the same plan
1.7-2.2x the CPU time and 2.0-2.6x the memory.

Cap and what happens to the deeper plan stages. The node count grows quadratically with depth and the
nested nodes run at every resolution, so the cost explodes with the plan's 7 stages and 512 features
(prototype, 256x256, batch 1, fp32: 61.6 M parameters, 90 GMACs and 1235 MiB of saved activations for 7
nested rows up to 512 features, against 33.5 M / 14.8 GMACs / 157 MiB for nnU-Net's plain 7-stage 2d U-Net).
Therefore only the first ``min(n_stages, max_nested_stages)`` plan stages are built (default 5, DNANet's and
the paper's depth): the deeper plan stages only add 16x16 and smaller maps at the plan's 384x320-like patch
sizes, whose receptive field is far beyond what a 1-3 mm perivascular space needs. ``n_rows`` and
``ds_strides`` expose what was built; ``get_deep_supervision_scales()`` gives the matching nnU-Net
deep-supervision scales, which the trainer must use instead of nnU-Net's default (that one assumes
``n_stages - 1`` outputs). Cost of the v1 build on nnU-Net's 7-stage plan: docs/results/network_benchmark.md.

Switches (each has a trainer in trainers/variants_network.py and a test in tests/test_network.py):
- ``encoder_block`` ("res_cbam" | "plain": nnU-Net's PlainConvEncoder), ``node_block`` ("res_cbam" |
  "conv_cbam": conv block then CBAM, no shortcut), ``blocks_per_row``, ``max_features`` (int or per row),
  ``resample`` ("dnanet" | "v1"), ``full_resolution_heads``: the faithful build vs the v1 build.
- ``attention_init="neutral"``: gate logit layers shrunk after He init, gates start at ~0.5 (attention).
- ``attention_from_row=1``: no attention on the full-resolution row and the fusion block.
- ``input_projection=True``: each node's first conv 1x1 (the `fast` variant's MAC cut; not the paper's).
- ``checkpoint_nodes=True``: activation checkpointing of nodes and fusion (same numbers, less memory).
The decoder (grid, fusion, heads) is in nested_decoder.py, the node blocks in nested_blocks.py, the encoder
column in nested_encoder.py.

Output sizes. Row shapes follow ceil division by the strides. nnU-Net makes the deep-supervision targets with
``round(size * scale)`` (``DownsampleSegForDSTransform``); where the two differ (only for patch sizes not
divisible by the total stride) a head's logits are resized (bilinear/trilinear) to the target size so that the
loss pairs tensors of equal shape. For plan patch sizes nothing is resized.
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
from nnunetv2_mfns.architectures.nested_decoder import RESAMPLE_MODES
from nnunetv2_mfns.architectures.nested_decoder import SUPPORTED_DIMS as _SUPPORTED_DIMS
from nnunetv2_mfns.architectures.nested_decoder import (MfNSDeDecoder, deep_supervision_layout,
                                                        deep_supervision_scales)
from nnunetv2_mfns.architectures.nested_encoder import ResCBAMEncoder

__all__ = ["MfNSDe", "MfNSDeDecoder", "deep_supervision_scales", "deep_supervision_layout", "DNANET_WIDTHS",
           "V1_BUILD"]

# DNANet's nb_filter: the width of rows 0..4 (deeper rows, if a caller nests more, keep the last)
DNANET_WIDTHS = (16, 32, 64, 128, 256)
ENCODER_BLOCKS = ("res_cbam", "plain")
# DNANet's full-resolution side heads on by default; the trainer reads this to lay out its DS targets
FULL_RESOLUTION_HEADS = True
# The constructor switches that give back the build this project trained before issue 22 ("v1"): nnU-Net's
# PlainConvEncoder, conv block -> CBAM nodes, one width cap of 256, max-pool down / align_corners=False up
# resampling, one head per row. ``nnUNetTrainerMfNSDe_V1`` builds it.
V1_BUILD = {"encoder_block": "plain", "node_block": "conv_cbam", "max_features": 256, "resample": "v1",
            "full_resolution_heads": False}

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

    Extra keyword switches (defaults = the faithful DNANet-based build; ``V1_BUILD`` = the pre-issue-22 one):
        use_attention: CBAM in every block (False: no attention parameters anywhere).
        encoder_block: "res_cbam" (DNANet's column: max pool + Res-CBAM blocks) or "plain" (PlainConvEncoder).
        blocks_per_row: Res-CBAM blocks per node and encoder stage, per row (default DNANet's 1, 2, 2, 2, 2).
        resample: "dnanet" (bilinear Up and Down, align_corners=True) or "v1" (adaptive max-pool Down).
        full_resolution_heads: DNANet's side heads on X(0, 1..L-2) in the deep-supervision outputs.
        max_nested_stages: build only the first ``min(n_stages, max_nested_stages)`` plan stages (rows).
        max_features: cap on each row's width, an int or one per row (default DNANet's 16..256).
        attention_reduction / attention_min_hidden: channel-MLP hidden width
            ``max(C // attention_reduction, attention_min_hidden)``.
        attention_kernel_size: kernel of the spatial-attention conv (CBAM: 7).
        node_block: "res_cbam" (default, DNANet's Res-CBAM block: residual shortcut around conv block +
            attention) or "conv_cbam" (conv block, then CBAM: the v1 build); see ``nested_blocks``.
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
        max_features: Union[int, Sequence[int]] = DNANET_WIDTHS,
        attention_reduction: int = 16,
        attention_min_hidden: int = 4,
        attention_kernel_size: int = 7,
        node_block: str = "res_cbam",
        attention_init: str = "he",
        attention_from_row: int = 0,
        input_projection: bool = False,
        checkpoint_nodes: bool = False,
        encoder_block: str = "res_cbam",
        blocks_per_row: Optional[Sequence[int]] = None,
        resample: str = "dnanet",
        full_resolution_heads: bool = FULL_RESOLUTION_HEADS,
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
        caps = [max_features] if isinstance(max_features, (int, np.integer)) else list(max_features)
        if not caps or any(not isinstance(c, (int, np.integer)) or c < 1 for c in caps):
            raise ValueError(f"MfNSDe: max_features must be an int >= 1 or a list of them, got {max_features!r}")
        if encoder_block not in ENCODER_BLOCKS:
            raise ValueError(f"MfNSDe: encoder_block must be one of {ENCODER_BLOCKS}, got {encoder_block!r}")
        if resample not in RESAMPLE_MODES:
            raise ValueError(f"MfNSDe: resample must be one of {RESAMPLE_MODES}, got {resample!r}")
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
        # per-row width cap; a list shorter than the grid repeats its last entry for the deeper rows
        self.max_features = [int(caps[min(i, len(caps) - 1)]) for i in range(self.n_rows)]
        self.use_attention = bool(use_attention)
        self.node_block = node_block
        self.attention_init = attention_init
        self.attention_from_row = int(attention_from_row)
        self.input_projection = bool(input_projection)
        self.checkpoint_nodes = bool(checkpoint_nodes)
        self.encoder_block = encoder_block
        self.resample = resample
        self.full_resolution_heads = bool(full_resolution_heads)
        self.widths = [int(min(f, c)) for f, c in zip(features[: self.n_rows], self.max_features)]
        if blocks_per_row is None:  # DNANet: 1 block on the full-resolution row, num_blocks = 2 on the others
            blocks_per_row = [1] + [2] * (self.n_rows - 1) if node_block == "res_cbam" else [1] * self.n_rows
        self.blocks_per_row = [int(b) for b in _per_stage(list(blocks_per_row), self.n_rows, "blocks_per_row")]
        self.ds_strides = [list(s) for s in strides[: self.n_rows]]
        self.num_classes = int(num_classes)

        # same keys as PlainConvUNet so nnU-Net's pretrained-weight tooling finds encoder and stem
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stages.0"
        self.keys_to_in_proj = ("encoder.stages.0.0.convs.0.all_modules.0", "encoder.stages.0.0.convs.0.conv")

        if encoder_block == "plain":
            self.encoder = PlainConvEncoder(
                input_channels, self.n_rows, self.widths, conv_op, kernel_sizes[: self.n_rows], self.ds_strides,
                n_conv[: self.n_rows], conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin,
                nonlin_kwargs, return_skips=True, nonlin_first=nonlin_first)
        else:
            encoder_attention = None if not use_attention or attention_from_row > 0 else dict(
                reduction=attention_reduction, min_hidden=attention_min_hidden,
                spatial_kernel_size=attention_kernel_size, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs,
                init=attention_init)
            self.encoder = ResCBAMEncoder(
                input_channels, self.n_rows, self.widths, conv_op, kernel_sizes[: self.n_rows], self.ds_strides,
                n_conv[: self.n_rows], self.blocks_per_row, conv_bias, norm_op, norm_op_kwargs, dropout_op,
                dropout_op_kwargs, nonlin, nonlin_kwargs, encoder_attention)
        # nnU-Net orders n_conv_per_stage_decoder from the deepest decoder level up: entry k belongs to
        # resolution level n_stages - 2 - k. Row i of the grid is level i.
        n_conv_per_row = [n_conv_dec[n_stages - 2 - i] for i in range(self.n_rows - 1)]
        self.decoder = MfNSDeDecoder(self.encoder, self.num_classes, n_conv_per_row, bool(deep_supervision),
                                     self.use_attention, nonlin_first, attention_reduction,
                                     attention_min_hidden, attention_kernel_size, node_block, attention_init,
                                     int(attention_from_row), bool(input_projection), bool(checkpoint_nodes),
                                     self.blocks_per_row, resample, self.full_resolution_heads)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        return self.decoder(self.encoder(x), x.shape[2:])

    def get_deep_supervision_scales(self) -> List[List[float]]:
        """Scales of the outputs returned with deep supervision on, in output order (``deep_supervision_layout``);
        pass them to nnU-Net (``_get_deep_supervision_scales``) so targets and outputs pair up."""
        return deep_supervision_layout(self.ds_strides, self.n_rows, self.n_rows, self.full_resolution_heads)[0]

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
