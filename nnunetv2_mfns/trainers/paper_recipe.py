"""nnUNetTrainerPaperRecipe: the training recipe Cai et al. 2024 share across all their 2D networks.

The paper trains MfNS_De and its 2D comparators (U-Net, IAANet, TriSegNet) the same way; only the
network differs. This base class holds that recipe and keeps nnU-Net's default network, so each method's
trainer is this class plus its network hooks (`build_network_architecture`, `_get_deep_supervision_scales`):

- global batch size 4 (split over GPUs by nnU-Net's own DDP logic),
- Adagrad, learning rate 0.05, no weight decay (DNANet's default, which MfNS_De extends),
- cosine annealing of the learning rate to 1e-5 over `lr_schedule_epochs` (default: the run's own
  `num_epochs`; DNANet's public training code, the paper is silent),
- soft Dice only (no cross-entropy) at every deep-supervision scale, weights 1/2^i normalised, every scale
  supervised: with HF the coarsest target still shows every PVS, so, unlike stock nnU-Net, we do not zero it,
- deep-supervision targets downsampled with HF (`hf_mode = "max"`: a coarse voxel is PVS if any voxel of
  its window is), so one-voxel PVS survive at every scale.
"""
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from batchgeneratorsv2.helpers.scalar_type import RandomScalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import softmax_helper_dim1
from torch import nn

from nnunetv2_mfns.trainers.schedulers import CosineAnnealingLRScheduler
from nnunetv2_mfns.trainers.seeding import seed_training_from_environment
from nnunetv2_mfns.transforms.hf_downsampling import DownsampleSegForDSTransformHF


class nnUNetTrainerPaperRecipe(nnUNetTrainer):
    """The paper's recipe with nnU-Net's default network (the plans' PlainConvUNet).

    Not registered as a `-tr` class itself: `nnUNetTrainerUNet2D_PaperRecipe` is the same thing under the
    paper's method name.
    """
    # DS target downsampling: 'max' (HF), 'area', 'nearest' (stock)
    hf_mode = "max"
    # global batch size of the paper (split over GPUs under DDP)
    paper_batch_size = 4
    # epochs over which the cosine decays; None = num_epochs. A run may stop before the end of its schedule
    # (the paper's epoch-50 model of a 1000-epoch run: nnUNetTrainerMfNSDe_50epochs).
    lr_schedule_epochs: Optional[int] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # mfns-compare --seeds: reproducible seed k (no-op when MFNS_TRAINING_SEED is unset)
        self.training_seed = seed_training_from_environment()
        self.initial_lr = 0.05
        self.min_lr = 1e-5
        self.weight_decay = 0.0
        self._check_configuration()

    def _check_configuration(self) -> None:
        """Fail at construction (not in the first iteration) when the plan or dataset cannot drive this trainer.
        Subclasses add their network's checks and call super()."""
        if self.hf_mode == "area" and self.label_manager.ignore_label is not None:
            raise ValueError(f"{self.__class__.__name__}: HF mode 'area' cannot be combined with the dataset's "
                             f"ignore label {self.label_manager.ignore_label}")

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
            loss = DeepSupervisionWrapper(loss, self._deep_supervision_weights())
        return loss

    def _deep_supervision_weights(self) -> List[float]:
        """Loss weight of each deep-supervision output, in output order, summing to 1: ``1/2^i`` normalised.
        A network whose outputs are not one per scale (MfNS_De's full-resolution side heads) overrides this."""
        weights = np.array([1 / (2 ** i) for i in range(len(self._get_deep_supervision_scales()))])
        return list(weights / weights.sum())

    # ---- optimisation: Adagrad, lr 0.05, cosine to 1e-5 -------------------------------------------------
    def optimizer_param_groups(self) -> List[dict]:
        """Parameter groups for the optimiser; a group's optional `lr_scale` multiplies the recipe's learning
        rate at every epoch (CosineAnnealingLRScheduler). One group, scale 1, unless a network needs otherwise."""
        return [{"params": list(self.network.parameters()), "lr_scale": 1.0}]

    def configure_optimizers(self):
        groups = self.optimizer_param_groups()
        for group in groups:
            group["lr"] = self.initial_lr * group.get("lr_scale", 1.0)
        optimizer = torch.optim.Adagrad(groups, lr=self.initial_lr, weight_decay=self.weight_decay)
        horizon = self.lr_schedule_epochs if self.lr_schedule_epochs is not None else self.num_epochs
        lr_scheduler = CosineAnnealingLRScheduler(optimizer, self.initial_lr, horizon, self.min_lr)
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
