"""DNANet's encoder column X(i, 0) for MfNS_De: max pooling, then Res-CBAM blocks.

DNANet (``model_DNANet.py``: ``conv{i}_0 = _make_layer(Res_CBAM_block, ...)`` applied to ``pool(x{i-1}_0)``)
builds its encoder from the same attention blocks as its nested nodes: X(0, 0) is one Res-CBAM block on the
input, X(i, 0) is ``num_blocks[i-1]`` Res-CBAM blocks on the 2x max-pooled X(i-1, 0). nnU-Net's
``PlainConvEncoder`` instead downsamples with a strided conv and has no attention. This module is the
DNANet column built from the plan: pooling window = the plan's stride of that stage (so anisotropic plans
such as [2, 1] pool only where the plan downsamples; ``ceil_mode`` keeps the strided conv's ceil-division
row shapes for sizes that are not divisible), the plan's kernel size and ``n_conv_per_stage`` convs per
block, the plan's norm, dropout and nonlin.

It exposes the attributes ``MfNSDeDecoder`` and nnU-Net's tooling read from a ``PlainConvEncoder``
(``stages``, ``output_channels``, ``strides``, ``kernel_sizes``, ``conv_op``, norm/dropout/nonlin and their
kwargs, ``conv_bias``, ``return_skips``, ``compute_conv_feature_map_size``).
"""
from typing import List, Optional, Sequence, Type

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunetv2_mfns.architectures.nested_blocks import make_node

_MAX_POOL = {nn.Conv2d: nn.MaxPool2d, nn.Conv3d: nn.MaxPool3d}


class ResCBAMEncoder(nn.Module):
    """Encoder column of Res-CBAM blocks with max-pool downsampling (DNANet), driven by nnU-Net plans."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: Sequence[int],
                 conv_op: Type[_ConvNd], kernel_sizes: Sequence, strides: Sequence, n_conv_per_stage: Sequence[int],
                 blocks_per_stage: Sequence[int], conv_bias: bool, norm_op: Optional[Type[nn.Module]],
                 norm_op_kwargs: Optional[dict], dropout_op: Optional[Type[nn.Module]],
                 dropout_op_kwargs: Optional[dict], nonlin: Optional[Type[nn.Module]], nonlin_kwargs: Optional[dict],
                 attention_kwargs: Optional[dict]) -> None:
        super().__init__()
        block_kwargs = dict(conv_bias=conv_bias, norm_op=norm_op, norm_op_kwargs=norm_op_kwargs,
                            dropout_op=dropout_op, dropout_op_kwargs=dropout_op_kwargs, nonlin=nonlin,
                            nonlin_kwargs=nonlin_kwargs)
        stages = []
        in_ch = input_channels
        for s in range(n_stages):
            block = make_node("res_cbam", n_conv_per_stage[s], conv_op, in_ch, features_per_stage[s], kernel_sizes[s],
                              block_kwargs, attention_kwargs, n_blocks=blocks_per_stage[s])
            if any(k > 1 for k in strides[s]):
                pool = _MAX_POOL[conv_op](kernel_size=tuple(strides[s]), stride=tuple(strides[s]), ceil_mode=True)
                stages.append(nn.Sequential(pool, block))
            else:
                stages.append(nn.Sequential(block))
            in_ch = features_per_stage[s]
        self.stages = nn.ModuleList(stages)
        self.output_channels = [int(f) for f in features_per_stage]
        self.strides = [list(s) for s in strides]
        self.kernel_sizes = [list(k) for k in kernel_sizes]
        self.blocks_per_stage = [int(b) for b in blocks_per_stage]
        self.return_skips = True
        self.conv_op = conv_op
        self.conv_bias = conv_bias
        self.norm_op = norm_op
        self.norm_op_kwargs = norm_op_kwargs
        self.dropout_op = dropout_op
        self.dropout_op_kwargs = dropout_op_kwargs
        self.nonlin = nonlin
        self.nonlin_kwargs = nonlin_kwargs

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        total = np.int64(0)
        size = list(input_size)
        for stage, stride in zip(self.stages, self.strides):
            size = [-(-a // b) for a, b in zip(size, stride)]  # ceil_mode pooling
            total += stage[-1].compute_conv_feature_map_size(size)
        return np.int64(total)
