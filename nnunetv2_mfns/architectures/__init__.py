"""Network architectures of nnunetv2-mfns (torch-heavy: import only where a network is needed)."""
from nnunetv2_mfns.architectures.attention import CBAM, ChannelAttention, SpatialAttention
from nnunetv2_mfns.architectures.mfns_de import MfNSDe, MfNSDeDecoder, deep_supervision_scales
from nnunetv2_mfns.architectures.nested_blocks import ConvCBAMNode, ResCBAMNode

__all__ = ["MfNSDe", "MfNSDeDecoder", "deep_supervision_scales", "CBAM", "ChannelAttention", "SpatialAttention",
           "ConvCBAMNode", "ResCBAMNode"]
