"""The paper's 2D comparators, each = the shared recipe (nnUNetTrainerPaperRecipe) + its network.

Table 2 of Cai et al. 2024 trains U-Net, IAANet and TriSegNet like MfNS_De (same folds, same recipe); so
each class below overrides only the network hooks (`build_network_architecture`, and
`_get_deep_supervision_scales` where its outputs differ from nnU-Net's default `n_stages - 1` scales).
Choices and deviations of the re-implemented networks: docs/baselines.md.
"""
from nnunetv2_mfns.trainers.paper_recipe import nnUNetTrainerPaperRecipe


class nnUNetTrainerUNet2D_PaperRecipe(nnUNetTrainerPaperRecipe):
    """The paper's plain U-Net baseline: nnU-Net's PlainConvUNet from the plans (all its DS scales) with the
    paper's recipe (HF DS targets, soft Dice, Adagrad 0.05, batch 4). Nothing to override: the recipe's
    base class keeps nnU-Net's network hooks."""
