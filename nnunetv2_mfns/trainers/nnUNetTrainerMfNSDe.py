"""nnUNetTrainerMfNSDe: the recipe of Cai et al. 2024 inside nnU-Net.

MfNS_De network (dense nested attention U-Net, `nnunetv2_mfns.architectures.mfns_de.MfNSDe`) built from
the plans' 2d configuration, deep supervision at every row of the network against HF-downsampled labels,
soft Dice only, Adagrad with learning rate 0.05, global batch size 4.

Where the paper is silent we follow DNANet's public training code, which MfNS_De extends (Adagrad
lr 0.05 is DNANet's default): cosine annealing of the learning rate to 1e-5 over the run. Every DS scale
is supervised (weights 1/2^i, normalised); unlike stock nnU-Net we do not zero the coarsest weight, since
with HF the coarsest target still shows every PVS and an unsupervised head would receive no gradient.
Checkpoint selection on the fold's validation group is nnU-Net's own `checkpoint_best.pth` (EMA pseudo
Dice on the validation cases of splits_final.json); predict with `-chk checkpoint_best.pth` to use it.
"""
from typing import List, Tuple, Union

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.helpers.scalar_type import RandomScalar
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import softmax_helper_dim1
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunetv2_mfns.trainers.schedulers import CosineAnnealingLRScheduler
from nnunetv2_mfns.transforms.hf_downsampling import DownsampleSegForDSTransformHF

MFNS_DE_CLASS = "nnunetv2_mfns.architectures.mfns_de.MfNSDe"
# constructor arguments of PlainConvUNet that the plans must provide for MfNS_De to honour them
REQUIRED_ARCH_KWARGS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides")


def mfns_de_arch_kwargs(configuration_manager: ConfigurationManager) -> Tuple[dict, Tuple[str, ...]]:
    """The plans' architecture kwargs mapped onto MfNS_De's PlainConvUNet-like constructor.

    Raises ValueError (at trainer construction, not in the first forward pass) when the configuration
    cannot drive MfNS_De, e.g. a plan for an architecture without per-stage conv counts and strides.
    """
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    req_import = tuple(configuration_manager.network_arch_init_kwargs_req_import)
    missing = [k for k in REQUIRED_ARCH_KWARGS if k not in kwargs]
    if missing:
        raise ValueError(f"MfNS_De cannot be built from configuration '{configuration_manager.configuration}' "
                         f"of architecture {configuration_manager.network_arch_class_name}: its plan lacks "
                         f"{missing}. Use a plan made by nnU-Net's default planner (PlainConvUNet).")
    if "n_conv_per_stage" not in kwargs:
        if "n_blocks_per_stage" in kwargs:  # residual-encoder plans: keep the encoder depth they ask for
            kwargs["n_conv_per_stage"] = kwargs.pop("n_blocks_per_stage")
        else:
            raise ValueError("MfNS_De needs 'n_conv_per_stage' (or 'n_blocks_per_stage') in the plan")
    kwargs.setdefault("n_conv_per_stage_decoder", kwargs["n_conv_per_stage"][:-1])
    allowed = {"n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage",
               "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
               "dropout_op_kwargs", "nonlin", "nonlin_kwargs"}
    kwargs = {k: v for k, v in kwargs.items() if k in allowed}
    req_import = tuple(k for k in req_import if k in kwargs)
    conv_op = str(kwargs["conv_op"])
    if not conv_op.endswith("Conv2d") and not conv_op.endswith("Conv3d"):
        raise ValueError(f"MfNS_De supports Conv2d (and Conv3d) plans, the plan asks for {conv_op}")
    return kwargs, req_import


def mfns_de_ds_scales(strides: List, n_stages: int, max_nested_stages: int) -> List[List[float]]:
    """nnU-Net-style DS scales for the rows MfNS_De actually builds: one output per row, full resolution first."""
    n_rows = min(int(n_stages), int(max_nested_stages))
    return [list(i) for i in 1 / np.cumprod(np.vstack(strides[:n_rows]), axis=0)]


class nnUNetTrainerMfNSDe(nnUNetTrainer):
    # network switches read by build_network_architecture (a classmethod, so inference sees them too)
    network_class_name = MFNS_DE_CLASS
    use_attention = True
    max_nested_stages = 5
    max_features = 256
    # DS target downsampling: 'max' (HF), 'area', 'nearest' (stock)
    hf_mode = "max"
    # global batch size of the paper (split over GPUs under DDP)
    paper_batch_size = 4

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 0.05
        self.min_lr = 1e-5
        self.weight_decay = 0.0
        self._check_configuration()

    def _check_configuration(self):
        """Fail at construction when the plan cannot drive this trainer's network."""
        if self.network_class_name == MFNS_DE_CLASS:
            mfns_de_arch_kwargs(self.configuration_manager)
        if self.hf_mode == "area" and self.label_manager.ignore_label is not None:
            raise ValueError(f"{self.__class__.__name__}: HF mode 'area' cannot be combined with the dataset's "
                             f"ignore label {self.label_manager.ignore_label}")

    # ---- network -------------------------------------------------------------------------------------
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        kwargs, req_import = mfns_de_arch_kwargs(configuration_manager)
        kwargs.update(use_attention=cls.use_attention, max_nested_stages=cls.max_nested_stages,
                      max_features=cls.max_features)
        return get_network_from_plans(cls.network_class_name, kwargs, req_import, num_input_channels,
                                      num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        kwargs = self.configuration_manager.network_arch_init_kwargs
        return mfns_de_ds_scales(kwargs["strides"], kwargs["n_stages"], self.max_nested_stages)

    # ---- data: HF targets for deep supervision ---------------------------------------------------------
    @classmethod
    def _ds_transform(cls, deep_supervision_scales, foreground_labels, ignore_label) -> BasicTransform:
        labels = None if foreground_labels is None else [0] + [int(i) for i in foreground_labels]
        return DownsampleSegForDSTransformHF(deep_supervision_scales, mode=cls.hf_mode, labels=labels,
                                             ignore_label=ignore_label)

    @classmethod
    def get_training_transforms(cls, patch_size: Union[np.ndarray, Tuple[int]], rotation_for_DA: RandomScalar,
                                deep_supervision_scales: Union[List, Tuple, None], mirror_axes: Tuple[int, ...],
                                do_dummy_2d_data_aug: bool, use_mask_for_norm: List[bool] = None,
                                is_cascaded: bool = False, foreground_labels: Union[Tuple[int, ...], List[int]] = None,
                                regions: List[Union[List[int], Tuple[int, ...], int]] = None,
                                ignore_label: int = None) -> BasicTransform:
        # stock pipeline without its nearest-neighbour DS step, then HF as the last transform
        composed = nnUNetTrainer.get_training_transforms(
            patch_size, rotation_for_DA, None, mirror_axes, do_dummy_2d_data_aug, use_mask_for_norm,
            is_cascaded, foreground_labels, regions, ignore_label)
        if deep_supervision_scales is not None:
            composed.transforms.append(cls._ds_transform(deep_supervision_scales, foreground_labels, ignore_label))
        return composed

    @classmethod
    def get_validation_transforms(cls, deep_supervision_scales: Union[List, Tuple, None], is_cascaded: bool = False,
                                  foreground_labels: Union[Tuple[int, ...], List[int]] = None,
                                  regions: List[Union[List[int], Tuple[int, ...], int]] = None,
                                  ignore_label: int = None) -> BasicTransform:
        composed = nnUNetTrainer.get_validation_transforms(None, is_cascaded, foreground_labels, regions, ignore_label)
        if deep_supervision_scales is not None:
            composed.transforms.append(cls._ds_transform(deep_supervision_scales, foreground_labels, ignore_label))
        return composed

    # ---- loss: soft Dice at every supervised scale ------------------------------------------------------
    def _build_loss(self):
        regions = self.label_manager.has_regions
        loss = MemoryEfficientSoftDiceLoss(batch_dice=self.configuration_manager.batch_dice, do_bg=regions,
                                           smooth=1e-5, ddp=self.is_ddp,
                                           apply_nonlin=torch.sigmoid if regions else softmax_helper_dim1)
        if self.label_manager.ignore_label is not None:
            loss = _IgnoreLabelMaskedDice(loss, self.label_manager.ignore_label)
        if self.enable_deep_supervision:
            n_scales = len(self._get_deep_supervision_scales())
            weights = np.array([1 / (2 ** i) for i in range(n_scales)])
            loss = DeepSupervisionWrapper(loss, weights / weights.sum())
        return loss

    # ---- optimisation: Adagrad, lr 0.05, cosine to 1e-5 -------------------------------------------------
    def configure_optimizers(self):
        optimizer = torch.optim.Adagrad(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        lr_scheduler = CosineAnnealingLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.min_lr)
        return optimizer, lr_scheduler

    # ---- batch size: the paper's global batch of 4 ------------------------------------------------------
    def _set_batch_size_and_oversample(self):
        # Reuse nnU-Net's logic (including the DDP split of the global batch) with the paper's value; restore
        # the plan afterwards so the plans.json copied to the results folder stays the planner's.
        configuration = self.configuration_manager.configuration
        planned = configuration["batch_size"]
        configuration["batch_size"] = self.paper_batch_size
        try:
            super()._set_batch_size_and_oversample()
        finally:
            configuration["batch_size"] = planned


class _IgnoreLabelMaskedDice(nn.Module):
    """Soft Dice that leaves ignore-label voxels out, as nnU-Net's compound loss does."""

    def __init__(self, dice: nn.Module, ignore_label: int):
        super().__init__()
        self.dice = dice
        self.ignore_label = ignore_label

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[1] != 1:  # soft targets carry no ignore label (refused at construction)
            return self.dice(net_output, target)
        mask = target != self.ignore_label
        target_clean = torch.where(mask, target, 0)
        return self.dice(net_output, target_clean, loss_mask=mask)
