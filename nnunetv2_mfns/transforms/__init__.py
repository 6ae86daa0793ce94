from nnunetv2_mfns.transforms.hf_downsampling import HF_MODES, DownsampleSegForDSTransformHF

__all__ = ["HF_MODES", "DownsampleSegForDSTransformHF"]
