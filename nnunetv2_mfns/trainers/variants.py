"""One-component variants of nnUNetTrainerMfNSDe: the paper's epoch-50 pick and ablations.

Each class changes one thing, named in its docstring, and nothing else.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_mfns.trainers.nnUNetTrainerMfNSDe import nnUNetTrainerMfNSDe


class nnUNetTrainerMfNSDe_50epochs(nnUNetTrainerMfNSDe):
    """The paper's pick: it trained for 1000 epochs and tested the epoch-50 model. So this run keeps the
    1000-epoch cosine schedule (the learning rate at epoch e is the 1000-epoch run's) and stops after epoch
    50, where nnU-Net saves checkpoint_final.pth. Annealing to 1e-5 within 50 epochs would be a different model."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.lr_schedule_epochs = self.num_epochs  # the full run's 1000 epochs
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
