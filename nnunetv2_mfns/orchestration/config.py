"""Configuration and environment of one `mfns-compare` call: the validated options and the environment of
the nnU-Net child processes (its three folders, CPU defaults)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from nnunetv2_mfns.budget_table import FULL_BUDGET
from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.orchestration.methods import Method

NNUNET_DIRS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
# Defaults for CPU runs (a user's own values win). nnU-Net's 8 export processes make a 2-core machine
# 2-3x slower; GNU OpenMP's busy-waiting threads, next to nnU-Net's worker processes, made a MfNS_De
# forward pass 15x slower (3-5 s instead of 0.23 s, measured side by side), passive waiting avoids it.
CPU_ENV_DEFAULTS = {"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1", "nnUNet_compile": "false",
                    "OMP_WAIT_POLICY": "PASSIVE"}
FILE_ENDING = ".nii.gz"
BIN = Path(sys.executable).parent
CHECKPOINTS = ("final", "best")


class CompareStepError(RuntimeError):
    """A step (subprocess) failed; the message names the step and its log file."""


@dataclass
class CompareConfig:
    """Everything one `mfns-compare` call needs. `env` is the environment of the child processes."""
    workdir: Path
    methods: list[Method]
    method_specs: list[str]
    budget: str
    folds: list[int]
    device: str = "cpu"
    gpus: list[str] = field(default_factory=list)
    seed: int = 0
    dataset: Optional[str] = None            # id or name of an existing raw dataset
    phantom: bool = False
    n_subjects: int = 10
    profile: str = "demo"
    phantom_id: int = 501
    phantom_name: str = "PVSPhantom"
    tta: bool = False
    checkpoint: str = "final"                # final | best (nnU-Net's checkpoint_best.pth, chosen on the validation group)
    overwrite: bool = False
    demo: bool = False
    n_groups: int = 5
    env: dict = field(default_factory=dict)
    seeds: int = 1                           # --seeds K: every method x fold trained K times (seeds.py)
    training_seed: Optional[int] = None      # set on the per-seed copies of the configuration only

    @property
    def raw_root(self) -> Path:
        return Path(self.env["nnUNet_raw"])

    @property
    def preprocessed_root(self) -> Path:
        return Path(self.env["nnUNet_preprocessed"])

    @property
    def results_root(self) -> Path:
        return Path(self.env["nnUNet_results"])

    @property
    def configurations(self) -> list[str]:
        # nnU-Net plans 2d before 3d_fullres; keep that order and plan only what the methods need
        return [c for c in ("2d", "3d_fullres") if any(m.configuration == c for m in self.methods)]

    @property
    def checkpoint_file(self) -> str:
        return f"checkpoint_{self.checkpoint}.pth"


def default_checkpoint(budget: str) -> str:
    """The test checkpoint when --checkpoint is not given: `best` (nnU-Net's checkpoint_best.pth, chosen on
    the fold's validation group, the paper's protocol) for the full schedule and the `study` budget (run to
    its plateau); `final` for the short budgets, whose few epochs make the EMA pseudo-Dice behind `best`
    meaningless."""
    return "best" if budget in (FULL_BUDGET, "study") else "final"


def exe(name: str) -> str:
    """Absolute path of a console script of this environment (nnU-Net's and ours live next to python)."""
    return str(BIN / name)


def planner_env(env: dict) -> dict:
    """`env` for nnUNetv2_plan_and_preprocess: nnU-Net's planner sizes a torch thread pool with
    nnUNet_n_proc_DA, so 0 (augmentation inside the training process, valid for nnUNetv2_train) makes it
    fail; the planner gets at least 1."""
    if env.get("nnUNet_n_proc_DA", "1").strip() in ("0", ""):
        return dict(env, nnUNet_n_proc_DA="1")
    return env


def child_env(base: dict, workdir: Path, device: str, demo: bool) -> dict:
    """Environment for the children. nnU-Net's three folders must be set (by the user, or by --demo to
    folders inside the workdir). On CPU the export/augmentation workers are kept to 1: nnU-Net's default of
    8 export processes makes a 2-core machine 2-3x slower (docs/reference/design.md section 10)."""
    env = dict(base)
    if demo:
        for var in NNUNET_DIRS:
            env[var] = str(Path(workdir).resolve() / var)
    missing = [v for v in NNUNET_DIRS if not env.get(v)]
    if missing:
        raise MfnsInputError(f"${missing[0]} is not set: nnU-Net needs nnUNet_raw, nnUNet_preprocessed and "
                             f"nnUNet_results (or use --demo, which keeps them inside the workdir)")
    for var in NNUNET_DIRS:
        env[var] = str(Path(env[var]).expanduser().resolve())
    if device == "cpu":
        for var, value in CPU_ENV_DEFAULTS.items():
            env.setdefault(var, value)
    return env
