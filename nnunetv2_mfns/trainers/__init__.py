"""The plugin's trainer classes. Every class listed in __all__ is visible to nnU-Net's stock CLI."""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_mfns.trainers.budgets import BUDGETS, make_budget_variant
from nnunetv2_mfns.trainers.comparators import (nnUNetTrainerIAANet, nnUNetTrainerTriSegNet,
                                                nnUNetTrainerUNet2D_PaperRecipe)
from nnunetv2_mfns.trainers.nnUNetTrainerMfNSDe import nnUNetTrainerMfNSDe
from nnunetv2_mfns.trainers.variants import (nnUNetTrainerMfNSDe_50epochs, nnUNetTrainerMfNSDe_AreaHF,
                                             nnUNetTrainerMfNSDe_NoAttention, nnUNetTrainerMfNSDe_NoDS,
                                             nnUNetTrainerMfNSDe_NoHF, nnUNetTrainerMfNSDe_nnUNetRecipe)
from nnunetv2_mfns.trainers.variants_network import (nnUNetTrainerMfNSDe_CheckpointNodes,
                                                     nnUNetTrainerMfNSDe_CoarseAttention, nnUNetTrainerMfNSDe_Fast,
                                                     nnUNetTrainerMfNSDe_NeutralAttInit, nnUNetTrainerMfNSDe_ResCBAM,
                                                     nnUNetTrainerMfNSDe_ResCBAMNeutral,
                                                     nnUNetTrainerMfNSDe_V1)

BASE_TRAINERS = [nnUNetTrainerMfNSDe, nnUNetTrainerMfNSDe_50epochs, nnUNetTrainerMfNSDe_NoHF,
                 nnUNetTrainerMfNSDe_AreaHF, nnUNetTrainerMfNSDe_NoAttention, nnUNetTrainerMfNSDe_NoDS,
                 nnUNetTrainerMfNSDe_nnUNetRecipe, nnUNetTrainerUNet2D_PaperRecipe,
                 nnUNetTrainerMfNSDe_V1, nnUNetTrainerMfNSDe_ResCBAM, nnUNetTrainerMfNSDe_NeutralAttInit, nnUNetTrainerMfNSDe_ResCBAMNeutral,
                 nnUNetTrainerMfNSDe_Fast, nnUNetTrainerMfNSDe_CheckpointNodes,
                 nnUNetTrainerMfNSDe_CoarseAttention, nnUNetTrainerIAANet, nnUNetTrainerTriSegNet]

__all__ = [c.__name__ for c in BASE_TRAINERS] + ["BUDGETS"]

# <Trainer>_<budget> for our trainers and the stock one (stock behaviour, shorter schedule)
for _base in BASE_TRAINERS + [nnUNetTrainer]:
    for _budget in BUDGETS:
        _cls = make_budget_variant(_base, _budget, __name__)
        globals()[_cls.__name__] = _cls
        __all__.append(_cls.__name__)
del _base, _budget, _cls
