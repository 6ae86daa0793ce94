"""The training budgets by name: one table for the trainers, `mfns-compare`, provenance and the report.

Torch-free on purpose: the orchestration and the report read the table (choices, schedule, whether a budget
may carry accuracy claims) without importing nnU-Net's trainers. The trainer classes themselves are made
from it in `nnunetv2_mfns/trainers/budgets.py`.
"""
from typing import Dict, NamedTuple


class Budget(NamedTuple):
    epochs: int
    iterations: int                 # training iterations per epoch
    val_iterations: int             # nnU-Net validation iterations per epoch (its pseudo-Dice, checkpoint_best)
    validation_tta: bool            # mirroring at the end-of-training validation and in the checkpoint
    curve_every: int = 0            # record a learning-curve point every k epochs (learning_curve.py); 0 = off
    pipeline_check: bool = False    # proves the plumbing only: a report from it warns that it is no accuracy result


BUDGETS: Dict[str, Budget] = {
    "ci": Budget(1, 2, 1, False, pipeline_check=True),      # tests: proves the plumbing, learns nothing
    "demo": Budget(3, 8, 1, False, pipeline_check=True),    # README demo on a 2-core CPU
    # CPU convergence study on the `study` phantom profile (issue 10): 500 iterations (the paper recipe's
    # curves flattened within ~150 on the demo phantom, stock nnU-Net's started after ~300), a
    # validation-DSC point every 50 iterations
    "study": Budget(20, 25, 3, True, curve_every=2),
    "short": Budget(20, 50, 10, True),     # GPU smoke runs
}
# `full` = each trainer's own schedule (no budget suffix on the trainer class)
FULL_BUDGET = "full"
BUDGET_CHOICES = (*BUDGETS, FULL_BUDGET)
PIPELINE_CHECK_BUDGETS = tuple(name for name, b in BUDGETS.items() if b.pipeline_check)
