"""IAANet (Wang et al., IEEE TGRS 2022, "Interior Attention-Aware Network for Infrared Small Target
Detection") as a dense 2D nnU-Net network, for the paper's comparison (Cai et al. 2024, Table 2).

The official code (kwwcv/iaanet) has two trunks and a transformer:
1. a region-proposal trunk (stride-16 CNN + 1x1 head, one anchor per cell) proposes boxes, which are
   detached: the segmentation loss never reaches the proposals;
2. a "semantic" trunk of 3x3 conv-norm-ReLU layers without downsampling gives one feature per pixel,
   projected to `d_model`: one token per pixel;
3. every pixel inside a kept box becomes a token; a DETR-style post-norm transformer encoder (sine 2D
   positions added to queries and keys) attends over the tokens of one image; an MLP scores each token,
   and pixels outside every box get probability 0.

Here the box step is expressed densely, so the network is a plain `forward(x) -> logits` that nnU-Net's
sliding-window predictor can run: the kept boxes are rasterised into a pixel mask (`regions.py`), the
masked pixels are gathered into one token sequence per image, and the token logits are scattered back into a full map whose other pixels hold a fixed background logit (probability ~0). Each
image's tokens form one sequence (as the original), so no padding mask is needed.

Adapted to PVS and to nnU-Net (each choice, its reason and its source: docs/baselines.md, "IAANet"):
- The region-proposal trunk is nnU-Net's `PlainConvEncoder` with the plan's first stages up to a total
  stride of `rpn_stride` (8: finer cells than the original 16, since PVS are 1-3 px wide and clustered),
  not an ImageNet ResNet-18 (no download; its conv1 was re-initialised for 1 channel anyway).
- Anchor = the RPN cell; a box = its cell grown by `box_growth_px` per side (4 px, the original's
  ground-truth box growth); no box regression, because the shared recipe's loss (soft Dice) has no box
  term. The objectness head predicts `num_classes` logits per cell and, with deep supervision on, is the
  second output, supervised by the recipe's HF target at the RPN scale (a cell is PVS if any pixel is):
  this replaces the original's YOLO detection loss.
- Kept cells: foreground probability > `conf_threshold` (0.2, as the original); none -> the top
  `fallback_top_k` (5, as the original, also at inference); in training at least `min_train_boxes` (5)
  cells, topped up with random ones (the original's random negative boxes). NMS is dropped: fixed grown
  cells overlap by IoU <= 1/3 < 0.6, so it would remove nothing.
- The original's training cap of 5 boxes is replaced by a token budget `max_tokens` per slice (pixels
  ranked by the score of their best covering box), applied identically in training and inference.
- Capacity capped for CPU training: `d_model` 128 (original 512), FFN 256 (original 1024: the same 2x),
  4 layers and 4 heads (original), semantic trunk of 6 convs (original) with widths capped at 64
  (original 64..512).
"""
import math
from typing import List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import StackedConvBlocks
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

from nnunetv2_mfns.architectures.iaanet_regions import select_token_pixels

IntOrSeq = Union[int, Sequence]


def _per_stage(value, n: int, name: str) -> list:
    if isinstance(value, (int, np.integer)):
        return [value] * n
    value = list(value)
    if len(value) < n:
        raise ValueError(f"IAANet: {name} has {len(value)} entries but n_stages={n}")
    return value[:n]


def _as_2d(v, name: str) -> List[int]:
    v = [int(v)] * 2 if isinstance(v, (int, np.integer)) else [int(i) for i in v]
    if len(v) != 2 or any(i < 1 for i in v):
        raise ValueError(f"IAANet: {name}={v} must be two ints >= 1 (a 2d plan)")
    return v


def rpn_stages(strides: Sequence, rpn_stride: int = 8) -> Tuple[int, List[int]]:
    """(number of plan stages in the region-proposal trunk, its total stride per axis): the first stages
    until every axis reaches `rpn_stride`, or all of them. The trainer derives the DS scale from it."""
    cumulative = np.cumprod(np.array([_as_2d(s, "strides") for s in strides]), axis=0)
    reached = np.nonzero((cumulative >= rpn_stride).all(axis=1))[0]
    n_rpn = int(reached[0]) + 1 if len(reached) else len(strides)
    return n_rpn, [int(s) for s in cumulative[n_rpn - 1]]


def sine_positions_2d(height: int, width: int, d_model: int, device: torch.device,
                      temperature: float = 10000.0) -> torch.Tensor:
    """DETR's PositionEmbeddingSine (normalize=True, scale 2*pi) over an all-ones mask -> (H*W, d_model).
    All-ones because the official code's mask `x >= 0` would drop z-scored MRI pixels below the mean."""
    n_feats = d_model // 2
    eps = 1e-6
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32) / (height + eps) * 2 * math.pi
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32) / (width + eps) * 2 * math.pi
    dim_t = temperature ** (2 * (torch.arange(n_feats, device=device) // 2) / n_feats)
    pos_y, pos_x = y[:, None] / dim_t, x[:, None] / dim_t  # (H, F), (W, F)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((pos_y[:, None, :].expand(height, width, n_feats),
                     pos_x[None, :, :].expand(height, width, n_feats)), dim=2)
    return pos.reshape(height * width, d_model)


class InteriorAttentionLayer(nn.Module):
    """DETR's post-norm transformer encoder layer: positions added to queries and keys only, ReLU FFN.

    Written with torch's fused scaled_dot_product_attention over one image's tokens (no padding, so no
    mask): on CPU it never materialises the T x T attention matrix unless attention dropout is on, which
    costs ~10x (measured at 2048 tokens); hence `attention_dropout` defaults to 0 (DETR: 0.1)."""

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.n_heads, self.attention_dropout = n_heads, attention_dropout
        self.q_proj, self.k_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.v_proj, self.out_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qk = x + pos

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            heads(self.q_proj(qk)), heads(self.k_proj(qk)), heads(self.v_proj(x)),
            dropout_p=self.attention_dropout if self.training else 0.0)
        attended = self.out_proj(attended.transpose(1, 2).reshape(b, t, d))
        x = self.norm1(x + self.dropout1(attended))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class InteriorAttentionDecoder(nn.Module):
    """Transformer over the kept pixels' tokens + the per-token MLP (original: d->d->d->1, here -> num_classes).

    Named `decoder` in IAANet and carries `deep_supervision`, the attribute nnU-Net's trainer switches."""

    def __init__(self, d_model: int, n_heads: int, n_layers: int, dim_feedforward: int, dropout: float,
                 attention_dropout: float, num_classes: int, deep_supervision: bool):
        super().__init__()
        self.layers = nn.ModuleList(InteriorAttentionLayer(d_model, n_heads, dim_feedforward, dropout,
                                                           attention_dropout) for _ in range(n_layers))
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(inplace=True),
                                 nn.Linear(d_model, d_model), nn.ReLU(inplace=True),
                                 nn.Linear(d_model, num_classes))
        self.deep_supervision = deep_supervision

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tokens = layer(tokens, pos)
        return self.mlp(tokens)


class IAANet(AbstractDynamicNetworkArchitectures):
    """Dense 2D IAANet; the constructor mirrors PlainConvUNet so nnU-Net plans drive it.

    The plan's stages build the region-proposal trunk (up to a total stride of `rpn_stride`); the plan's
    first-stage kernel, conv/norm/dropout/nonlinearity build the semantic trunk. `n_conv_per_stage_decoder`
    is accepted for plan compatibility and unused (IAANet has no conv decoder).
    Output: segmentation logits (B, num_classes, H, W); with deep supervision
    `[segmentation, objectness]`, objectness at scale `get_deep_supervision_scales()[1]`.
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq,
                 conv_op: Type[_ConvNd], kernel_sizes: IntOrSeq, strides: IntOrSeq, n_conv_per_stage: IntOrSeq,
                 num_classes: int, n_conv_per_stage_decoder: Optional[IntOrSeq] = None, conv_bias: bool = False,
                 norm_op: Union[None, Type[nn.Module]] = None, norm_op_kwargs: Optional[dict] = None,
                 dropout_op: Union[None, Type[_DropoutNd]] = None, dropout_op_kwargs: Optional[dict] = None,
                 nonlin: Union[None, Type[nn.Module]] = None, nonlin_kwargs: Optional[dict] = None,
                 deep_supervision: bool = False, rpn_stride: int = 8, rpn_max_features: int = 256,
                 n_semantic_convs: int = 6, semantic_max_features: int = 64, d_model: int = 128,
                 n_heads: int = 4, n_layers: int = 4, dim_feedforward: int = 256, transformer_dropout: float = 0.1,
                 attention_dropout: float = 0.0,
                 box_growth_px: int = 4, conf_threshold: float = 0.2, fallback_top_k: int = 5,
                 min_train_boxes: int = 5, max_tokens: int = 2048, outside_logit: float = 10.0) -> None:
        super().__init__()
        if conv_op is not nn.Conv2d:
            raise ValueError(f"IAANet is 2D: conv_op must be torch.nn.Conv2d, got {conv_op!r}")
        if d_model % 4 or d_model % n_heads:
            raise ValueError(f"IAANet: d_model={d_model} must be divisible by 4 (sine positions) and n_heads={n_heads}")
        if min(max_tokens, fallback_top_k, n_semantic_convs, n_layers, num_classes) < 1 or box_growth_px < 0:
            raise ValueError("IAANet: max_tokens, fallback_top_k, n_semantic_convs, n_layers, num_classes must be "
                             ">= 1 and box_growth_px >= 0")
        features = [int(f) for f in _per_stage(features_per_stage, n_stages, "features_per_stage")]
        kernel_sizes = [_as_2d(k, "kernel_sizes") for k in _per_stage(kernel_sizes, n_stages, "kernel_sizes")]
        strides = [_as_2d(s, "strides") for s in _per_stage(strides, n_stages, "strides")]
        n_conv = _per_stage(n_conv_per_stage, n_stages, "n_conv_per_stage")

        # region-proposal trunk: the plan's first stages until every axis reaches rpn_stride
        n_rpn, self.rpn_stride = rpn_stages(strides, rpn_stride)
        conv_kw = dict(conv_bias=conv_bias, norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, dropout_op=dropout_op,
                       dropout_op_kwargs=dropout_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        rpn_features = [min(f, rpn_max_features) for f in features[:n_rpn]]
        self.encoder = PlainConvEncoder(input_channels, n_rpn, rpn_features, conv_op, kernel_sizes[:n_rpn],
                                        strides[:n_rpn], n_conv[:n_rpn], return_skips=False, **conv_kw)
        self.rpn_head = conv_op(rpn_features[-1], num_classes, 1, 1, 0, bias=True)

        # semantic trunk: full resolution, widths follow the plan's stages, capped
        sem = [min(features[min(i, n_stages - 1)], semantic_max_features) for i in range(n_semantic_convs)]
        self.semantic = StackedConvBlocks(n_semantic_convs, conv_op, input_channels, sem, kernel_sizes[0], 1,
                                          **conv_kw)
        self.token_proj = conv_op(sem[-1], d_model, 1, 1, 0, bias=True)
        self.decoder = InteriorAttentionDecoder(d_model, n_heads, n_layers, dim_feedforward, transformer_dropout,
                                                attention_dropout, num_classes, deep_supervision)
        self.num_classes, self.d_model = num_classes, d_model
        self.box_growth_px, self.conf_threshold = int(box_growth_px), float(conf_threshold)
        self.fallback_top_k, self.min_train_boxes = int(fallback_top_k), int(min_train_boxes)
        self.max_tokens, self.outside_logit = int(max_tokens), float(outside_logit)
        # AbstractDynamicNetworkArchitectures bookkeeping (used by nnU-Net's pretrained-weight tooling)
        self.key_to_encoder = "encoder"
        self.key_to_stem = "encoder.stages.0"
        self.keys_to_in_proj = ("encoder.stages.0.0.convs.0.conv", "semantic.convs.0.conv")

    def get_deep_supervision_scales(self) -> List[List[float]]:
        """nnU-Net DS scales of the outputs: full-resolution segmentation, then the objectness map."""
        return [[1.0, 1.0], [1.0 / s for s in self.rpn_stride]]

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        b, _, h, w = x.shape
        objectness = self.rpn_head(self.encoder(x))
        with torch.no_grad():  # boxes are detached in the original too
            fg = 1 - torch.softmax(objectness.float(), 1)[:, 0] if self.num_classes > 1 \
                else torch.sigmoid(objectness.float()[:, 0])
            kept = select_token_pixels(fg, (h, w), self.rpn_stride, self.box_growth_px, self.conf_threshold,
                                       self.fallback_top_k, self.min_train_boxes if self.training else 0,
                                       self.max_tokens)
        feats = self.token_proj(self.semantic(x)).flatten(2).transpose(1, 2)  # (B, H*W, d): a token per pixel
        pos = sine_positions_2d(h, w, self.d_model, x.device).to(feats.dtype)
        # every pixel outside the kept boxes: a fixed background logit, i.e. probability ~0 of foreground
        background = feats.new_zeros(self.num_classes, h * w)
        background[0] = self.outside_logit if self.num_classes > 1 else -self.outside_logit  # softmax / sigmoid
        rows = []
        for i, idx in enumerate(kept):  # one sequence per image, as the original (no padding needed)
            logits = self.decoder(feats[i, idx][None], pos[idx][None])[0]  # (T, C)
            rows.append(background.index_copy(1, idx, logits.t().to(background.dtype)))  # autocast: fp16/fp32
        seg = torch.stack(rows).view(b, self.num_classes, h, w)
        if not self.decoder.deep_supervision:
            return seg
        # nnU-Net makes DS targets with round(size * scale); the strided convs give ceil(size / stride)
        target = [round(s * scale) for s, scale in zip((h, w), self.get_deep_supervision_scales()[1])]
        if list(objectness.shape[2:]) != target:
            objectness = F.interpolate(objectness, size=target, mode="bilinear", align_corners=False)
        return [seg, objectness]

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He init for convs (as nnU-Net's networks), Xavier-uniform for the transformer (as DETR)."""
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
        else:
            InitWeights_He(1e-2)(module)
