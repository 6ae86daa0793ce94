"""nnUNetTrainerMfNSDe: the method of Cai et al. 2024 inside nnU-Net.

The paper's shared recipe (`paper_recipe.nnUNetTrainerPaperRecipe`: batch 4, Adagrad 0.05 with cosine decay,
soft Dice only, HF deep-supervision targets) combined with the MfNS_De network (dense nested attention
U-Net, `nnunetv2_mfns.architectures.mfns_de.MfNSDe`, DNANet's Res-CBAM build: see the departure table in its
module docstring) built from the plans' 2d configuration. Deep supervision follows the network's output layout
(`deep_supervision_layout`): the fused output and DNANet's full-resolution side heads at scale 1, then one
head per coarser row at its own scale against HF targets, so the DS scales and loss weights come from the
network, not from nnU-Net's `n_stages - 1` default.
Checkpoint selection on the fold's validation group is nnU-Net's own `checkpoint_best.pth` (EMA pseudo
Dice on the validation cases of splits_final.json); predict with `-chk checkpoint_best.pth` to use it.
"""
from typing import Tuple

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunetv2_mfns.architectures.mfns_de import DNANET_WIDTHS, FULL_RESOLUTION_HEADS
from nnunetv2_mfns.architectures.nested_decoder import deep_supervision_layout
from nnunetv2_mfns.trainers.network_from_plans import plain_conv_arch_kwargs
from nnunetv2_mfns.trainers.paper_recipe import nnUNetTrainerPaperRecipe

MFNS_DE_CLASS = "nnunetv2_mfns.architectures.mfns_de.MfNSDe"


def mfns_de_arch_kwargs(configuration_manager: ConfigurationManager) -> Tuple[dict, Tuple[str, ...]]:
    """The plans' architecture kwargs mapped onto MfNS_De's PlainConvUNet-like constructor (2d or 3d plans).
    Raises ValueError at trainer construction when the configuration cannot drive MfNS_De."""
    return plain_conv_arch_kwargs(configuration_manager, "MfNS_De", ("Conv2d", "Conv3d"))


class nnUNetTrainerMfNSDe(nnUNetTrainerPaperRecipe):
    """The paper's recipe (nnUNetTrainerPaperRecipe) with the MfNS_De network; only the network hooks differ."""
    # network switches read by build_network_architecture (a classmethod, so inference sees them too)
    network_class_name = MFNS_DE_CLASS
    use_attention = True
    max_nested_stages = 5
    max_features = DNANET_WIDTHS
    # further MfNSDe constructor switches (node_block, attention_init, attention_from_row, ...): the variants in
    # trainers/variants_network.py set this; empty = the faithful build (the constructor's defaults)
    network_options: dict = {}

    def _check_configuration(self):
        super()._check_configuration()
        if self.network_class_name == MFNS_DE_CLASS:
            mfns_de_arch_kwargs(self.configuration_manager)

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        kwargs, req_import = mfns_de_arch_kwargs(configuration_manager)
        kwargs.update(use_attention=cls.use_attention, max_nested_stages=cls.max_nested_stages,
                      max_features=cls.max_features)
        kwargs.update(cls.network_options)
        return get_network_from_plans(cls.network_class_name, kwargs, req_import, num_input_channels,
                                      num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

    def _deep_supervision_layout(self):
        kwargs = self.configuration_manager.network_arch_init_kwargs
        return deep_supervision_layout(kwargs["strides"], kwargs["n_stages"], self.max_nested_stages,
                                       self.network_options.get("full_resolution_heads", FULL_RESOLUTION_HEADS))

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        return self._deep_supervision_layout()[0]

    def _deep_supervision_weights(self):
        return self._deep_supervision_layout()[1]
