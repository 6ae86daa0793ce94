"""Method names of the head-to-head -> (nnU-Net configuration, trainer class), with the shared budget suffix.

Every method is trained by the stock `nnUNetv2_train`, so a method is just a configuration and a trainer
class name. The budget (`ci`, `demo`, `study`, `short`, `full`) is appended to every method's trainer so that all
methods get the same epochs x iterations (`full` = the trainer's own schedule, no suffix).
Class names are checked up front with nnU-Net's own class lookup, so a typo fails before any work.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Optional

from nnunetv2_mfns.budget_table import BUDGET_CHOICES, FULL_BUDGET
from nnunetv2_mfns.errors import MfnsInputError

# docs/interfaces.md, "Trainers and methods"
NAMED_METHODS: dict[str, tuple[str, str]] = {
    "MfNS_De": ("2d", "nnUNetTrainerMfNSDe"),
    "nnUNet_3d": ("3d_fullres", "nnUNetTrainer"),
    "nnUNet_2d": ("2d", "nnUNetTrainer"),
    "UNet2D": ("2d", "nnUNetTrainerUNet2D_PaperRecipe"),
    "IAANet": ("2d", "nnUNetTrainerIAANet"),
    "TriSegNet": ("2d", "nnUNetTrainerTriSegNet"),
}
# Methods that are not the default nnUNetPlans (issue 23). ResEnc-M: nnU-Net's recommended Residual Encoder
# preset (nnunetv2 >= 2.4): its own plans file, written by `nnUNetv2_plan_experiment -pl nnUNetPlannerResEncM`,
# whose 3d_fullres reuses the preprocessed nnUNetPlans_3d_fullres data; trained by the stock trainer with `-p`.
PLANS_METHODS: dict[str, tuple[str, str, str]] = {
    "ResEncM_3d": ("3d_fullres", "nnUNetTrainer", "nnUNetResEncUNetMPlans"),
}
PLANNER_OF_PLANS = {"nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM"}
DEFAULT_PLANS = "nnUNetPlans"
# Non-learned baselines: no training; parameters tuned on each fold's training cases, predictions written like
# a method's (nnunetv2_mfns/cli/nonlearned_baseline.py). name -> detector kind (evaluation/detectors.py)
NON_LEARNED_METHODS: dict[str, str] = {"Frangi": "frangi", "LocalContrast": "local_contrast"}
CONFIGURATIONS = ("2d", "3d_fullres")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Method:
    """One competitor: the name used in the report, its configuration and the budgeted trainer class."""
    name: str
    configuration: str
    base_trainer: str
    trainer: str
    plans: str = DEFAULT_PLANS
    non_learned: Optional[str] = None  # detector kind of a non-learned baseline (no nnU-Net training)

    @property
    def results_subfolder(self) -> str:
        """nnU-Net's model folder name inside $nnUNet_results/DatasetXXX_Name."""
        return f"{self.trainer}__{self.plans}__{self.configuration}"


def budgeted_trainer(base_trainer: str, budget: str) -> str:
    if budget not in BUDGET_CHOICES:
        raise MfnsInputError(f"--budget {budget!r}: must be one of {', '.join(BUDGET_CHOICES)}")
    return base_trainer if budget == FULL_BUDGET else f"{base_trainer}_{budget}"


def find_trainer_class(name: str) -> Optional[type]:
    """nnU-Net's own lookup (recursive_find_python_class) over its trainer package, then over the plugin's
    nnUNet_extTrainer folder (the same two places `nnUNetv2_train` searches). Imports torch."""
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunetv2_mfns._discovery import EXT_TRAINER_DIR

    cls = recursive_find_python_class(os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer"), name,
                                      "nnunetv2.training.nnUNetTrainer")
    if cls is None:
        cls = recursive_find_python_class(EXT_TRAINER_DIR, name, "nnunetv2_mfns.nnunet_ext")
    return cls


def parse_method_spec(spec: str) -> tuple[str, str, str]:
    """`NAME` (a named method or a trainer class name, 2d) or `TRAINER@CONFIGURATION`
    -> (report name, configuration, base trainer)."""
    spec = spec.strip()
    if spec in NAMED_METHODS:
        conf, trainer = NAMED_METHODS[spec]
        return spec, conf, trainer
    trainer, _, conf = spec.partition("@")
    conf = conf or "2d"
    if not _NAME_RE.fullmatch(trainer):
        raise MfnsInputError(f"--methods {spec!r}: not a method name ({', '.join(NAMED_METHODS)}) "
                             f"or a trainer class name")
    if conf not in CONFIGURATIONS:
        raise MfnsInputError(f"--methods {spec!r}: configuration {conf!r} must be one of {', '.join(CONFIGURATIONS)}")
    name = trainer if conf == "2d" else f"{trainer}@{conf}"
    return name, conf, trainer


def resolve_methods(specs: list[str], budget: str,
                    find_class: Callable[[str], Optional[type]] = find_trainer_class) -> list[Method]:
    """Methods with budgeted trainers; every trainer class must exist (checked with find_class)."""
    if not specs:
        raise MfnsInputError("--methods: at least one method is needed")
    methods: list[Method] = []
    for spec in specs:
        spec = spec.strip()
        if spec in NON_LEARNED_METHODS:  # no trainer, no configuration of its own (reads the raw images)
            if any(m.name == spec for m in methods):
                raise MfnsInputError(f"--methods: {spec!r} is given twice")
            methods.append(Method(spec, "none", "none", "none", non_learned=NON_LEARNED_METHODS[spec]))
            continue
        if spec in PLANS_METHODS:
            conf, base, plans = PLANS_METHODS[spec]
            name = spec
        else:
            (name, conf, base), plans = parse_method_spec(spec), DEFAULT_PLANS
        if any(m.name == name for m in methods):
            raise MfnsInputError(f"--methods: {name!r} is given twice")
        trainer = budgeted_trainer(base, budget)
        if any(m.trainer == trainer and m.configuration == conf and m.plans == plans for m in methods):
            raise MfnsInputError(f"--methods {spec!r}: trains the same model ({trainer}, {conf}) as another method")
        methods.append(Method(name, conf, base, trainer, plans))
    unknown = [m for m in methods if m.non_learned is None and find_class(m.trainer) is None]
    if unknown:
        m = unknown[0]
        hint = "" if m.base_trainer == m.trainer or find_class(m.base_trainer) is None else \
            f" (class {m.base_trainer} exists but has no '{budget}' budget variant; use --budget full)"
        raise MfnsInputError(f"--methods {m.name!r}: trainer class {m.trainer} not found by nnU-Net's class lookup"
                             f"{hint}; named methods are {', '.join(NAMED_METHODS)}")
    return methods
