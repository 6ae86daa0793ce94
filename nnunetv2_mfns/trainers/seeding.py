"""Seeding a training from `MFNS_TRAINING_SEED` (set per seed by `mfns-compare --seeds K`).

nnU-Net does not seed its trainings: weight init, patch sampling and in-process augmentation draw from
torch's, numpy's and Python's global generators, seeded by the OS. With `MFNS_TRAINING_SEED=k` in the
environment our trainers seed all three with k before anything random happens (the network is built later,
in `initialize()`), so seed k of a method x fold is a reproducible training on one CPU process. Augmentation
worker processes (`nnUNet_n_proc_DA` > 0) and GPU kernels keep their own, unseeded randomness. Unset: nothing
changes (nnU-Net's default behaviour).
"""
import os
import random
from typing import Optional

import numpy as np
import torch

from nnunetv2_mfns.budget_table import TRAINING_SEED_ENV as SEED_ENV


def training_seed_from_environment() -> Optional[int]:
    """The seed in `MFNS_TRAINING_SEED`, or None when unset; a value that is not an integer >= 0 is refused."""
    text = os.environ.get(SEED_ENV, "").strip()
    if not text:
        return None
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise ValueError(f"{SEED_ENV}={text!r}: the training seed must be an integer >= 0")
    return seed


def seed_training_from_environment() -> Optional[int]:
    """Seed torch, numpy and random from `MFNS_TRAINING_SEED` when it is set; returns the seed used."""
    seed = training_seed_from_environment()
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    return seed
