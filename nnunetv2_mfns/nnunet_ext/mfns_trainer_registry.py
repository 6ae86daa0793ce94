"""The one module nnU-Net imports from our `nnUNet_extTrainer` folder.

nnU-Net imports each plain module of an ext folder by its top-level name, looks the requested class up
with getattr and drops the module from sys.modules afterwards; it never reads a package's __init__.
So this file re-exports every trainer class of the plugin by absolute import.
"""
from nnunetv2_mfns.trainers import *  # noqa: F401,F403
from nnunetv2_mfns.trainers import __all__  # noqa: F401
