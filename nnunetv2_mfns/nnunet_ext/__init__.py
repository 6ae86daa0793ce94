"""Folder that the discovery .pth appends to nnUNet_extTrainer. nnU-Net never reads this __init__; it
imports `mfns_trainer_registry.py` by its top-level name."""
