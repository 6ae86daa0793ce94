"""The paper's 2D comparators, each = the shared recipe (nnUNetTrainerPaperRecipe) + its network.

Table 2 of Cai et al. 2024 trains U-Net, IAANet and TriSegNet like MfNS_De (same folds, same recipe); so
each class below overrides only the network hooks (`build_network_architecture`, and
`_get_deep_supervision_scales` where its outputs differ from nnU-Net's default `n_stages - 1` scales).
Choices and deviations of the re-implemented networks: docs/baselines.md.
"""
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunetv2_mfns.architectures.iaanet import rpn_stages
from nnunetv2_mfns.architectures.trisegnet import trisegnet_deep_supervision_scales
from nnunetv2_mfns.trainers.network_from_plans import plain_conv_arch_kwargs
from nnunetv2_mfns.trainers.paper_recipe import nnUNetTrainerPaperRecipe


class nnUNetTrainerUNet2D_PaperRecipe(nnUNetTrainerPaperRecipe):
    """The paper's plain U-Net baseline: nnU-Net's PlainConvUNet from the plans (all its DS scales) with the
    paper's recipe (HF DS targets, soft Dice, Adagrad 0.05, batch 4). Nothing to override: the recipe's
    base class keeps nnU-Net's network hooks."""


class nnUNetTrainerIAANet(nnUNetTrainerPaperRecipe):
    """IAANet (dense 2D re-implementation, `architectures/iaanet.py`) with the paper's recipe.

    Two outputs under deep supervision: the full-resolution segmentation and the region-proposal
    objectness map at the trunk's stride, whose HF target (a cell is PVS if any of its pixels is) trains
    the proposals in place of the original's detection loss. 2d plans only."""
    network_class_name = "nnunetv2_mfns.architectures.iaanet.IAANet"
    rpn_stride = 8
    # The transformer and token MLP (network.decoder) learn at 1/100 of the recipe's rate (5e-4 at the start).
    # Adagrad's first steps move every weight by about the learning rate; at 0.05 the post-norm transformer
    # and its MLP collapsed to background on a fixed batch (full-resolution Dice ~0 after 25 steps; 1/10:
    # ~0.03; 1/100: 0.99, the trunks at 0.05 throughout). DETR trains its transformer at 1e-4, and the
    # original IAANet runs everything but the region proposals at 1/10 of their rate.
    transformer_lr_scale = 0.01

    def _do_i_compile(self) -> bool:
        # The token count differs from batch to batch (data-dependent region selection), so torch.compile
        # would recompile for new shapes until it hits its cache limit; eager mode is the honest default.
        return False

    def optimizer_param_groups(self):
        net = getattr(self.network, "module", self.network)  # DDP wrapper
        net = getattr(net, "_orig_mod", net)  # torch.compile wrapper (nnU-Net compiles before this call)
        in_transformer = {id(p) for p in net.decoder.parameters()}
        transformer = [p for p in net.parameters() if id(p) in in_transformer]
        trunks = [p for p in net.parameters() if id(p) not in in_transformer]
        return [{"params": trunks, "lr_scale": 1.0}, {"params": transformer, "lr_scale": self.transformer_lr_scale}]

    def _check_configuration(self) -> None:
        super()._check_configuration()
        plain_conv_arch_kwargs(self.configuration_manager, "IAANet")

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        kwargs, req_import = plain_conv_arch_kwargs(configuration_manager, "IAANet")
        kwargs["rpn_stride"] = cls.rpn_stride
        return get_network_from_plans(cls.network_class_name, kwargs, req_import, num_input_channels,
                                      num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        _, stride = rpn_stages(self.configuration_manager.network_arch_init_kwargs["strides"], self.rpn_stride)
        return [[1.0, 1.0], [1.0 / s for s in stride]]


class nnUNetTrainerTriSegNet(nnUNetTrainerPaperRecipe):
    """TriSegNet (2D re-implementation of chenypic/TriSegNet, `architectures/trisegnet.py`) with the paper's
    recipe: one DS head per built level (the first `max_stages` plan stages), full resolution first. 2d plans only."""
    network_class_name = "nnunetv2_mfns.architectures.trisegnet.TriSegNet"
    max_stages = 4

    def _check_configuration(self) -> None:
        super()._check_configuration()
        plain_conv_arch_kwargs(self.configuration_manager, "TriSegNet")

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        kwargs, req_import = plain_conv_arch_kwargs(configuration_manager, "TriSegNet")
        kwargs["max_stages"] = cls.max_stages
        return get_network_from_plans(cls.network_class_name, kwargs, req_import, num_input_channels,
                                      num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        kwargs = self.configuration_manager.network_arch_init_kwargs
        return trisegnet_deep_supervision_scales(kwargs["strides"], kwargs["n_stages"], self.max_stages)
