"""TriSegNet in 2D for nnU-Net: the paper's (Cai et al. 2024) third comparator, rebuilt from public code.

Source and identity. The only public brain-MRI network named TriSegNet is chenypic/TriSegNet
("TriSegNet: Trilateral Segmentation Network for Brain Tumor Segmentation", TriSegNet.py@54673f8), a 3D
BraTS model; no paper text, venue or authors were found, so that it is the network Cai et al. compared
against is likely but **unverified** (research notes: docs/reference/baselines_research.md section 2). This module is
our own 2D re-implementation of that code's layout, not a copy; docs/baselines.md lists every deviation.

Layout (level i = plan stage i; level 0 = full resolution for the usual stride [1, 1]; d = n_levels - 1):
- Stem: conv(in -> f0, stride s0) then conv(f0 -> f1, stride s1), each conv-norm-nonlin. As in the
  original, the f0 full-resolution map has no skip to the decoder (a known limit for 1-3 px PVS, kept
  because it is what the original does).
- Spatial path, levels 1..d: an inception block at level 1 on the stem output; for i >= 2 a strided
  conv f_{i-1} -> f_i then an inception block. Inception ("Isomorphism_incept"): four branches of ~C/4
  channels (1x1; 1x1 -> factorised 3; 1x1 -> factorised 5; 1x1 -> factorised 7), concatenated, a 1x1
  projection (bias, no norm), a residual add and the nonlinearity.
- Context path, levels 1..d: Xception-style residual blocks of depthwise-separable convs (nonlin ->
  separable conv -> norm, repeated; identity or 1x1-conv+norm shortcut): 3 repeats at level 1; for
  i >= 2 a 2-repeat block f_{i-1} -> f_i ending in a strided conv + norm, then a 3-repeat block. At the
  deepest level: nonlin -> squeeze-excitation without reduction (GAP -> 1x1 -> nonlin -> 1x1 -> sigmoid
  -> scale) -> x * GAP(x) (the original's parameter-free ``SEModule_1``).
- Fusion decoder: F_d = SE(conv(cat[S_d, C_d])); for i = d-1 .. 1:
  F_i = conv(cat[S_i, conv(Up F_{i+1}), conv(Up Up F_{i+2})]) (the last term when i + 2 <= d; in the
  original this is the 1/8 -> 1/2 "dense" branch). Every decoder conv at level i outputs f_{i-1}
  channels, which reproduces the original's widths on nnU-Net's 32-64-128-256 plan prefix exactly.
  Finally Up F_1 to level 0, a refinement block x -> nonlin(x + conv(x)) and a 1x1 head (logits; the
  original's softmax is left to nnU-Net's loss and predictor).

3D -> 2D. Every 3x3x3 conv becomes the plan's 2d kernel (3x3); trilinear x2 up-sampling becomes bilinear
interpolation to the exact size of the target level (align_corners=False, the original's default), so
odd patch sizes work. The inception branches' factorised (k,k,1) -> (1,1,k) pairs map, by default
(``factorisation="slice"``), to k x k -> 1 x 1: this is exactly what the 3D block computes on a one-slice
volume (zero padding leaves only the centre tap of the through-plane (1,1,k) kernel), so the 2D branch is
the original restricted to one axial slice. ``factorisation="asymmetric"`` instead uses the in-plane pair
(k,1) -> (1,k) (Inception-v3 style), a reinterpretation kept as an option.

Plans. Depth = ``min(n_stages, max_stages)`` with ``max_stages=4`` (the original's three downsamplings);
deeper plan stages are not built. Widths, strides, kernel sizes, norm, dropout, nonlin and conv_bias come
from the plan (convs followed by a norm use the plan's ``conv_bias``; the inception projection, the SE
convs and the heads keep the original's bias). The per-level block counts are TriSegNet's own (one conv
per stem stage, 3/2+3 separable repeats, one conv per decoder step), so ``n_conv_per_stage`` and
``n_conv_per_stage_decoder`` are validated for shape but do not change the network.

Deep supervision (the original has none; the shared recipe supervises several scales): a 1x1 head on
every F_i gives output i at scale 1/prod(strides[:i+1]); with deep supervision on, forward returns
``n_levels`` tensors, full resolution first; off, output 0 only. Every head exists in both modes, so
weights load strictly either way. ``trisegnet_deep_supervision_scales`` gives the matching nnU-Net scales
before the network exists (nnU-Net's default assumes ``n_stages - 1`` outputs and would mis-pair).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.initialization.weight_init import InitWeights_He

from nnunetv2_mfns.architectures.mfns_de import (_per_stage, _per_stage_vectors, _resolve_class,
                                                 deep_supervision_scales)
from nnunetv2_mfns.architectures.trisegnet_blocks import (ContextBlock, InceptionBlock, SqueezeExcitation, PlanOps,
                                                          _up)

IntOrSeq = Union[int, List[int], Tuple[int, ...]]
FACTORISATIONS = ("slice", "asymmetric")


def trisegnet_deep_supervision_scales(strides: Sequence, n_stages: Optional[int] = None,
                                      max_stages: int = 4) -> List[List[float]]:
    """nnU-Net deep-supervision scales of a TriSegNet built from these plan strides: one per built level,
    full resolution first, ``1 / cumprod(strides)[:min(n_stages, max_stages)]``."""
    return deep_supervision_scales(strides, n_stages, max_stages)


class TriSegNetEncoder(nn.Module):
    """Stem + spatial path + context path; returns the spatial maps of levels 1..d, the deepest context map
    and the spatial size of every level 0..d."""

    def __init__(self, ops: PlanOps, input_channels: int, widths: List[int], kernels: List[List[int]],
                 strides: List[List[int]], factorisation: str) -> None:
        super().__init__()
        d = len(widths) - 1
        self.strides = strides
        self.stem = nn.Sequential(ops.cdnr(input_channels, widths[0], kernels[0], strides[0]),
                                  ops.cdnr(widths[0], widths[1], kernels[1], strides[1]))
        spatial: List[nn.Module] = [InceptionBlock(ops, widths[1], factorisation)]
        context: List[nn.Module] = [ContextBlock(ops, widths[1], widths[1], 3, [1] * len(kernels[1]), kernels[1],
                                                 start_with_act=False)]
        for i in range(2, d + 1):
            spatial.append(nn.Sequential(ops.cdnr(widths[i - 1], widths[i], kernels[i], strides[i]),
                                         InceptionBlock(ops, widths[i], factorisation)))
            context.append(nn.Sequential(
                ContextBlock(ops, widths[i - 1], widths[i], 2, strides[i], kernels[i], start_with_act=True),
                ContextBlock(ops, widths[i], widths[i], 3, [1] * len(kernels[i]), kernels[i], start_with_act=True)))
        self.spatial = nn.ModuleList(spatial)
        self.context = nn.ModuleList(context)
        self.context_act = ops.act()
        self.context_se = SqueezeExcitation(ops, widths[d])

    def forward(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor, List[List[int]]]:
        x0 = self.stem[0](x)
        x = self.stem[1](x0)
        shapes = [list(x0.shape[2:]), list(x.shape[2:])]
        s, c = x, x
        spatial = []
        for sp, ctx in zip(self.spatial, self.context):
            s, c = sp(s), ctx(c)
            spatial.append(s)
            if len(spatial) > 1:
                shapes.append(list(s.shape[2:]))
        c = self.context_se(self.context_act(c))
        # the original's SEModule_1: scale every channel by its own spatial mean (no sigmoid, no weights)
        c = c * torch.mean(c, dim=tuple(range(2, c.ndim)), keepdim=True)
        return spatial, c, shapes


class TriSegNetDecoder(nn.Module):
    """Fusion ("localization") path, refinement and heads. Named ``decoder`` in the network so that nnU-Net's
    ``set_deep_supervision_enabled`` (which sets ``network.decoder.deep_supervision``) works."""

    def __init__(self, ops: PlanOps, widths: List[int], kernels: List[List[int]], strides: List[List[int]],
                 num_classes: int, deep_supervision: bool) -> None:
        super().__init__()
        d = len(widths) - 1
        self.deep_supervision = deep_supervision
        self.n_levels = d + 1
        w = widths
        self.fuse_deep = ops.cdnr(2 * w[d], w[d - 1], kernels[d])
        self.fuse_deep_se = SqueezeExcitation(ops, w[d - 1])
        # index k of these lists belongs to level k + 1
        self.near = nn.ModuleList([ops.cdnr(w[i], w[i - 1], kernels[i]) for i in range(1, d)])
        self.far = nn.ModuleList([ops.cdnr(w[i + 1], w[i - 1], kernels[i]) for i in range(1, d - 1)])
        self.fuse = nn.ModuleList([ops.cdnr(w[i] + w[i - 1] + (w[i - 1] if i + 2 <= d else 0), w[i - 1], kernels[i])
                                   for i in range(1, d)])
        self.refine = ops.cdnr(w[0], w[0], kernels[0])
        self.refine_act = ops.act()
        self.seg_layers = nn.ModuleList([ops.conv_op(w[0], num_classes, 1, bias=True)] +
                                        [ops.conv_op(w[i - 1], num_classes, 1, bias=True) for i in range(1, d + 1)])
        self.scales = deep_supervision_scales(strides, d + 1, d + 1)

    def target_shape(self, level: int, input_shape: Sequence[int]) -> List[int]:
        """nnU-Net's DS target size for output ``level`` (``round(size * scale)``, DownsampleSegForDSTransform)."""
        return [max(1, int(round(n * s))) for n, s in zip(input_shape, self.scales[level])]

    def forward(self, spatial: List[torch.Tensor], context: torch.Tensor, shapes: List[List[int]],
                input_shape: Sequence[int]) -> Union[torch.Tensor, List[torch.Tensor]]:
        d = self.n_levels - 1
        fused: Dict[int, torch.Tensor] = {d: self.fuse_deep_se(self.fuse_deep(torch.cat([spatial[d - 1], context], 1)))}
        up_one: Dict[int, torch.Tensor] = {}  # up_one[i] = F_{i+1} up-sampled to level i
        for i in range(d - 1, 0, -1):
            up_one[i] = _up(fused[i + 1], shapes[i])
            parts = [spatial[i - 1], self.near[i - 1](up_one[i])]
            if i + 2 <= d:
                # the original up-samples the already up-sampled map again (x2 twice), not x4 at once
                parts.append(self.far[i - 1](_up(up_one[i + 1], shapes[i])))
            fused[i] = self.fuse[i - 1](torch.cat(parts, 1))
        top = _up(fused[1], shapes[0])
        top = self.refine_act(top + self.refine(top))
        out0 = _up(self.seg_layers[0](top), self.target_shape(0, input_shape))
        if not self.deep_supervision:
            return out0
        return [out0] + [_up(self.seg_layers[i](fused[i]), self.target_shape(i, input_shape)) for i in range(1, d + 1)]


class TriSegNet(AbstractDynamicNetworkArchitectures):
    """2D TriSegNet for nnU-Net; the constructor mirrors ``PlainConvUNet`` so nnU-Net plans drive it.

    Extra keyword switches:
        max_stages: build only the first ``min(n_stages, max_stages)`` plan stages (default 4: the
            original's full resolution + three downsamplings).
        factorisation: "slice" (k x k -> 1 x 1, the original on one slice) or "asymmetric" (k x 1 -> 1 x k).

    See the module docstring for the layout, the 3D -> 2D mapping and deep supervision.
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
        max_stages: int = 4,
        factorisation: str = "slice",
    ) -> None:
        init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self._init_kwargs = init_kwargs  # rebuilds a meta-device twin for compute_conv_feature_map_size
        conv_op = _resolve_class(conv_op, "conv_op", allow_none=False)
        if conv_op is not nn.Conv2d:
            raise ValueError(f"TriSegNet: conv_op must be torch.nn.Conv2d (a 2D network), got {conv_op!r}")
        norm_op = _resolve_class(norm_op, "norm_op", allow_none=True)
        dropout_op = _resolve_class(dropout_op, "dropout_op", allow_none=True)
        nonlin = _resolve_class(nonlin, "nonlin", allow_none=True)
        if factorisation not in FACTORISATIONS:
            raise ValueError(f"TriSegNet: factorisation must be one of {FACTORISATIONS}, got {factorisation!r}")
        for name, v, lo in (("n_stages", n_stages, 2), ("max_stages", max_stages, 2),
                            ("input_channels", input_channels, 1), ("num_classes", num_classes, 1)):
            if not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"TriSegNet: {name} must be an int >= {lo}, got {v!r}")

        features = [int(f) for f in _per_stage(features_per_stage, n_stages, "features_per_stage")]
        kernels = _per_stage_vectors(kernel_sizes, n_stages, 2, "kernel_sizes")
        if any(k % 2 == 0 for ks in kernels for k in ks):
            raise ValueError(f"TriSegNet: kernel_sizes must be odd (same padding), got {kernels}")
        stride_list = _per_stage_vectors(strides, n_stages, 2, "strides")
        # accepted for PlainConvUNet compatibility; TriSegNet's block counts are its own (module docstring)
        _per_stage(n_conv_per_stage, n_stages, "n_conv_per_stage")
        _per_stage(n_conv_per_stage_decoder, n_stages - 1, "n_conv_per_stage_decoder")

        self.n_stages_plan = int(n_stages)
        self.n_levels = int(min(n_stages, max_stages))
        self.widths = features[: self.n_levels]
        if self.widths[0] < 1 or any(f < 4 for f in self.widths[1:]):
            raise ValueError(f"TriSegNet: features_per_stage must be >= 1 at stage 0 and >= 4 below "
                             f"(four inception branches), got {self.widths}")
        self.ds_strides = [list(s) for s in stride_list[: self.n_levels]]
        self.num_classes = int(num_classes)
        self.input_channels = int(input_channels)
        self.factorisation = factorisation

        self.key_to_encoder = "encoder"
        self.key_to_stem = "encoder.stem"
        self.keys_to_in_proj = ("encoder.stem.0.conv",)

        ops = PlanOps(conv_op, conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin,
                   nonlin_kwargs, nonlin_first)
        kernels = kernels[: self.n_levels]
        self.encoder = TriSegNetEncoder(ops, self.input_channels, self.widths, kernels, self.ds_strides, factorisation)
        self.decoder = TriSegNetDecoder(ops, self.widths, kernels, self.ds_strides, self.num_classes,
                                        bool(deep_supervision))

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        spatial, context, shapes = self.encoder(x)
        return self.decoder(spatial, context, shapes, x.shape[2:])

    def get_deep_supervision_scales(self) -> List[List[float]]:
        """Scales of the outputs returned with deep supervision on (full resolution first, one per level)."""
        return deep_supervision_scales(self.ds_strides, self.n_levels, self.n_levels)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Voxels of every convolution's output for one sample of spatial size ``input_size`` (the way
        dynamic_network_architectures counts a conv-norm-nonlin block once). Exact: one forward pass on
        the meta device, so no memory or compute is spent."""
        if len(input_size) != 2:
            raise ValueError(f"TriSegNet.compute_conv_feature_map_size: give (x, y), got {tuple(input_size)}")
        # a twin built on the meta device (functional_call cannot restore the aliased weights of
        # ConvDropoutNormReLU, which holds its conv as .conv and .all_modules.0)
        with torch.device("meta"):
            twin = type(self)(**self._init_kwargs)
        total = [0]
        for m in twin.modules():
            if isinstance(m, _ConvNd):
                m.register_forward_hook(lambda mod, inp, out: total.__setitem__(0, total[0] + out[0].numel()))
        twin(torch.zeros((1, self.input_channels, *input_size), device="meta"))
        return np.int64(total[0])

    @staticmethod
    def initialize(module: nn.Module) -> None:
        InitWeights_He(1e-2)(module)
