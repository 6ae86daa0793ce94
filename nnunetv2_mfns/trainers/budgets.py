"""Short training budgets for every plugin trainer and for the stock nnUNetTrainer.

nnU-Net fixes the schedule inside the trainer class (its own `_5epochs` variants), and the stock CLI has
no flag for it, so each budget is a class `<Trainer>_<budget>`. The head-to-head gives every method the
same budget (same epochs x iterations) by appending the same suffix.
The classes are generated here rather than written out 3 x 9 times; each one only sets the schedule.
"""
from typing import Dict, Type

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

# budget -> (epochs, training iterations per epoch, validation iterations per epoch, mirroring TTA at validation)
BUDGETS: Dict[str, tuple] = {
    "ci": (1, 2, 1, False),          # tests: proves the plumbing, learns nothing
    "demo": (3, 8, 1, False),        # README demo on a 2-core CPU
    "short": (20, 50, 10, True),     # GPU smoke runs
}


def make_schedule_variant(base: Type[nnUNetTrainer], name: str, epochs: int, iterations: int,
                          val_iterations: int, validation_tta: bool = True,
                          module_name: str = __name__) -> Type[nnUNetTrainer]:
    """`base` with only its schedule changed (epochs x iterations, validation iterations, a checkpoint every
    epoch) and, with `validation_tta=False`, no mirroring at the final validation / inference."""

    class _Budgeted(base):
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device('cuda')):
            super().__init__(plans, configuration, fold, dataset_json, device)
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
    epochs, iterations, val_iterations, validation_tta = BUDGETS[budget]
    cls = make_schedule_variant(base, f"{base.__name__}_{budget}", epochs, iterations, val_iterations,
                                validation_tta, module_name)
    cls.__doc__ = (f"{base.__name__} with budget '{budget}': {epochs} epochs x {iterations} iterations"
                   f"{'' if validation_tta else ', no mirroring at validation/inference'}.")
    return cls
