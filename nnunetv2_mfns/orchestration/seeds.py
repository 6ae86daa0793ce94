"""`mfns-compare --seeds K`: every method x fold trained K times, so that the report can test at the level of
independent trainings (fold x seed, evaluation/fold_stats.py) instead of counting one model's test cases as
independent replications.

nnU-Net names a model folder only by dataset, trainer, plans and configuration, so K trainings of one fold
need K results roots: seed k trains and predicts with `nnUNet_results=<nnUNet_results>/mfns_seeds/seed_k`
(nnU-Net's own layout below it, stock commands unchanged) and writes its predictions to
`<workdir>/predictions*/<method>/seed_k/fold_f`, from which the report reads the seed. Each training child
also gets `MFNS_TRAINING_SEED=k` in its environment. nnU-Net itself does not seed training (torch, numpy and
its augmentation workers draw from the OS); the plugin's trainers and every budget variant (also of the stock
nnUNetTrainer) seed torch, numpy and random from that variable (trainers/seeding.py), so seed k is reproducible
in one process; augmentation worker processes and a full-budget stock nnUNetTrainer stay unseeded. Without --seeds (K = 1)
nothing changes: one training per fold in nnU-Net's usual folder.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from nnunetv2_mfns.budget_table import TRAINING_SEED_ENV as SEED_ENV  # one name for trainers and the CLI
from nnunetv2_mfns.orchestration.config import CompareConfig

SEEDS_FOLDER = "mfns_seeds"


def seed_results_root(results_root: Path, seed: int) -> Path:
    return Path(results_root) / SEEDS_FOLDER / f"seed_{seed}"


def seed_configs(cfg: CompareConfig) -> list[CompareConfig]:
    """[cfg] without --seeds; otherwise one copy per seed 0..K-1 with its results root and seed variable."""
    if cfg.seeds == 1:
        return [cfg]
    return [dataclasses.replace(cfg, training_seed=k,
                                env=dict(cfg.env, nnUNet_results=str(seed_results_root(cfg.results_root, k)),
                                         **{SEED_ENV: str(k)}))
            for k in range(cfg.seeds)]


def env_prefix(cfg: CompareConfig) -> list[str]:
    """`env VAR=... ` words that make a printed command of a seed copy reproduce it (dry run)."""
    if cfg.training_seed is None:
        return []
    return ["env", f"nnUNet_results={cfg.env['nnUNet_results']}", f"{SEED_ENV}={cfg.training_seed}"]
