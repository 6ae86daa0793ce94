"""nnunetv2-mfns: MfNS_De for perivascular-space segmentation as an nnU-Net v2 plugin.

Kept import-light on purpose: the discovery `.pth` imports `nnunetv2_mfns._discovery` at every Python
start-up, which imports this file first, so nothing here may import torch or nnunetv2.
"""
__version__ = "0.1.0"
