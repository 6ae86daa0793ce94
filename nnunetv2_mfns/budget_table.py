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
    description: str = ""           # what the budget is, in the words provenance, CLI help and reports use


# What `study` is: every trainer's own LR schedule (poly for nnU-Net, cosine for the paper recipe) runs to its end
# within 20 x 25 = 500 iterations, so the LR is annealed towards 0 over the last points and every learning curve
# flattens by construction (a cosine LR is at ~15% / 5% / 0.6% of its peak at the last three curve points). A flat curve
# at this budget is therefore no evidence of convergence; it is a fixed, equal, annealed budget. The key stays
# `study` (trainer names such as nnUNetTrainerMfNSDe_study and the committed results use it).
STUDY_DESCRIPTION = ("annealed 500-iteration budget: 20 epochs x 25 iterations, each trainer's own LR schedule "
                     "compressed into those 500 iterations, so learning curves flatten by construction (not a "
                     "convergence test)")

BUDGETS: Dict[str, Budget] = {
    "ci": Budget(1, 2, 1, False, pipeline_check=True,        # tests: proves the plumbing, learns nothing
                 description="pipeline check: 1 epoch x 2 iterations, learns nothing"),
    "demo": Budget(3, 8, 1, False, pipeline_check=True,      # README demo on a 2-core CPU
                   description="pipeline check: 3 epochs x 8 iterations (README demo on a 2-core CPU)"),
    # the CPU study on the `study` phantom profile (issue 10), a validation-DSC point every 50 iterations
    "study": Budget(20, 25, 3, True, curve_every=2, description=STUDY_DESCRIPTION),
    # issue 22: 4x the study budget, to test whether the study's ordering and differences hold with more training
    "long": Budget(80, 25, 3, True, curve_every=4,
                   description="annealed 2000-iteration budget: 80 epochs x 25 iterations (4x `study`), each "
                               "trainer's own LR schedule compressed into those 2000 iterations; a curve point "
                               "every 100 iterations"),
    "short": Budget(20, 50, 10, True,      # GPU smoke runs
                    description="short: 20 epochs x 50 iterations with the LR schedule compressed into them "
                                "(GPU smoke runs)"),
}
# `full` = each trainer's own schedule (no budget suffix on the trainer class)
FULL_BUDGET = "full"
BUDGET_CHOICES = (*BUDGETS, FULL_BUDGET)
PIPELINE_CHECK_BUDGETS = tuple(name for name, b in BUDGETS.items() if b.pipeline_check)
# The training seed of `mfns-compare --seeds` travels to each nnUNetv2_train child in this variable; the trainers
# seed from it (trainers/seeding.py). Here, torch-free, so that orchestration and trainers share one name.
TRAINING_SEED_ENV = "MFNS_TRAINING_SEED"
