"""One-component variants of nnUNetTrainerMfNSDe: the paper's epoch-50 pick, ablations and baselines.

Each class changes one thing, named in its docstring, and nothing else.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_mfns.trainers.nnUNetTrainerMfNSDe import nnUNetTrainerMfNSDe


class nnUNetTrainerMfNSDe_50epochs(nnUNetTrainerMfNSDe):
    """The paper's pick: it converged after ~50 epochs and tested the epoch-50 model."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 50


class nnUNetTrainerMfNSDe_NoHF(nnUNetTrainerMfNSDe):
    """Ablation: DS targets by stock nearest-neighbour downsampling instead of HF max pooling."""
    hf_mode = "nearest"


class nnUNetTrainerMfNSDe_AreaHF(nnUNetTrainerMfNSDe):
    """Variant: soft DS targets (foreground fraction per coarse voxel) instead of HF max pooling."""
    hf_mode = "area"


class nnUNetTrainerMfNSDe_NoAttention(nnUNetTrainerMfNSDe):
    """Ablation: nested nodes without channel/spatial attention."""
    use_attention = False


class nnUNetTrainerMfNSDe_NoDS(nnUNetTrainerMfNSDe):
    """Ablation: loss on the full-resolution output only."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False


class nnUNetTrainerMfNSDe_nnUNetRecipe(nnUNetTrainerMfNSDe):
    """MfNS_De + HF with stock nnU-Net optimisation: SGD (Nesterov) with poly LR from 1e-2, Dice + CE with
    nnU-Net's DS weights, the planner's batch size. Separates the network's effect from the recipe's."""
    configure_optimizers = nnUNetTrainer.configure_optimizers
    _build_loss = nnUNetTrainer._build_loss
    _set_batch_size_and_oversample = nnUNetTrainer._set_batch_size_and_oversample

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-2
        self.weight_decay = 3e-5


class nnUNetTrainerUNet2D_PaperRecipe(nnUNetTrainerMfNSDe):
    """The paper's plain U-Net baseline: nnU-Net's PlainConvUNet from the plans (all its DS scales), trained
    with the MfNS_De recipe (HF DS targets, soft Dice, Adagrad 0.05, batch 4)."""
    network_class_name = None
    build_network_architecture = staticmethod(nnUNetTrainer.build_network_architecture)
    _get_deep_supervision_scales = nnUNetTrainer._get_deep_supervision_scales
