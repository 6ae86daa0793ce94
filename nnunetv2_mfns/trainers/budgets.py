"""Short training budgets for every plugin trainer and for the stock nnUNetTrainer.

nnU-Net fixes the schedule inside the trainer class (its own `_5epochs` variants), and the stock CLI has
no flag for it, so each budget is a class `<Trainer>_<budget>`. The head-to-head gives every method the
same budget (same epochs x iterations) by appending the same suffix.
The classes are generated here rather than written out 3 x 9 times; each one only sets the schedule.
"""
from typing import Type

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_mfns.budget_table import BUDGETS
from nnunetv2_mfns.trainers.learning_curve import with_learning_curve
from nnunetv2_mfns.trainers.seeding import seed_training_from_environment


def make_schedule_variant(base: Type[nnUNetTrainer], name: str, epochs: int, iterations: int,
                          val_iterations: int, validation_tta: bool = True,
                          module_name: str = __name__, curve_every: int = 0) -> Type[nnUNetTrainer]:
    """`base` with only its schedule changed (epochs x iterations, validation iterations, a checkpoint every
    epoch) and, with `validation_tta=False`, no mirroring at the final validation / inference. With
    `curve_every` > 0 it also records a learning curve (learning_curve.py) every that many epochs."""
    if curve_every:
        base = with_learning_curve(base, curve_every)

    class _Budgeted(base):
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device('cuda')):
            super().__init__(plans, configuration, fold, dataset_json, device)
            # mfns-compare --seeds also for the stock nnUNetTrainer's budget variants (idempotent after the
            # paper recipe's own call: the same seed, nothing random drawn in between)
            self.training_seed = seed_training_from_environment()
            self.num_epochs = epochs
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = val_iterations
            # checkpoint every epoch so an interrupted short run resumes with `--c`
            self.save_every = 1

        def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
            rotation, dummy_2d, initial_patch_size, mirror_axes = \
                super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
            if not validation_tta:
                # Training augmentation is unchanged; only the final validation (and predictions from this
                # checkpoint) skip mirroring, which would cost 4-8 forward passes per window on a CPU.
                self.inference_allowed_mirroring_axes = None
            return rotation, dummy_2d, initial_patch_size, mirror_axes

    _Budgeted.__name__ = _Budgeted.__qualname__ = name
    _Budgeted.__module__ = module_name
    return _Budgeted


def make_budget_variant(base: Type[nnUNetTrainer], budget: str, module_name: str = __name__) -> Type[nnUNetTrainer]:
    b = BUDGETS[budget]
    cls = make_schedule_variant(base, f"{base.__name__}_{budget}", b.epochs, b.iterations, b.val_iterations,
                                b.validation_tta, module_name, b.curve_every)
    cls.__doc__ = (f"{base.__name__} with budget '{budget}': {b.epochs} epochs x {b.iterations} iterations"
                   f"{'' if b.validation_tta else ', no mirroring at validation/inference'}"
                   f"{f', learning curve every {b.curve_every} epochs' if b.curve_every else ''}.")
    return cls
