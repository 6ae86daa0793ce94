"""Makes the plugin's trainers visible to nnU-Net's stock command-line tools.

nnU-Net (>= 2.8) looks for a trainer class first in its own package and then in every folder listed in
its `nnUNet_extTrainer` environment variable (os.pathsep-separated). This module appends the plugin's
`nnunet_ext/` folder to that variable. It is imported at every Python start-up by the
`nnunetv2_mfns_discovery.pth` file that `pip install` places in site-packages, so a fresh shell needs
no manual step. It must stay tiny and torch-free: it only edits `os.environ`.

The folder holds one module that imports the trainer classes by absolute import. We point nnU-Net at
that small folder, never at site-packages itself (nnU-Net would import every module found there).
"""
import os

EXT_TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_ext")


def register_ext_trainer_dir(environ=os.environ) -> str:
    """Appends our folder to nnUNet_extTrainer, keeping what the user set. Idempotent."""
    current = environ.get("nnUNet_extTrainer", "")
    parts = [p for p in current.split(os.pathsep) if p]
    if EXT_TRAINER_DIR not in parts:
        parts.append(EXT_TRAINER_DIR)
    environ["nnUNet_extTrainer"] = os.pathsep.join(parts)
    return environ["nnUNet_extTrainer"]


register_ext_trainer_dir()
