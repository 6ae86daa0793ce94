"""The paper's validation protocol: five age-balanced groups, fold k tests on group k, validates on one
other (seeded) group and trains on the rest (docs/reference/design.md section 5, docs/interfaces.md "Splits").

Groups are formed by sorting the cases by age (ties broken by a seeded random key) and dealing them out
in snake order (0,1,..,n-1,n-1,..,1,0,0,1,..), the usual way to balance a sorted covariate across
groups. Which group receives which snake position is a seeded permutation, so with N not divisible by
n the seed decides which groups get the extra case. Validation groups are a seeded derangement of the
groups (no group validates its own fold, every group validates exactly one fold), which keeps the
"random other group" of the paper while using every group once as validation.

`splits_final.json` is nnU-Net's own format (list of {"train", "val"}), so the stock trainers use the
identical folds; the test group of each fold is in `mfns_splits.json`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nnunetv2_mfns.errors import MfnsInputError, read_json_file
from nnunetv2_mfns.jsonio import write_json_atomic

MFNS_SPLITS_FILE = "mfns_splits.json"
NNUNET_SPLITS_FILE = "splits_final.json"


def _snake_positions(n_items: int, n_groups: int) -> list[int]:
    """Snake order 0..n-1, n-1..0, 0..n-1, ... truncated to n_items."""
    out: list[int] = []
    block = 0
    while len(out) < n_items:
        order = range(n_groups) if block % 2 == 0 else range(n_groups - 1, -1, -1)
        out.extend(order)
        block += 1
    return out[:n_items]


def _seeded_derangement(n: int, rng: np.random.Generator) -> list[int]:
    """A uniformly random permutation without fixed points (rejection sampling; ~e tries on average)."""
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return [int(p) for p in perm]


def _sd(values: list[float]) -> float:
    # Sample SD (ddof=1), as cohort tables report it (the paper's 63.0 +/- 10.3); 0 for one case.
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def make_age_stratified_splits(ages: dict[str, float], seed: int, n_groups: int = 5,
                               sexes: dict[str, str] | None = None) -> dict:
    """Age-balanced groups and the paper's folds for the given cases (see module docstring).

    Returns {"seed", "n_groups", "groups", "group_stats", "folds"} as in docs/interfaces.md; all case
    lists are sorted. Raises MfnsInputError for missing/non-numeric ages, n_groups < 3 or fewer cases
    than groups.
    """
    if not isinstance(n_groups, int) or n_groups < 3:
        raise MfnsInputError(f"--n-groups: must be an integer >= 3 (test, validation and training groups), got {n_groups!r}")
    if not isinstance(seed, (int, np.integer)):
        raise MfnsInputError(f"--seed: must be an integer, got {seed!r}")
    bad = sorted(c for c, a in ages.items() if not isinstance(a, (int, float)) or isinstance(a, bool)
                 or not math.isfinite(a))
    if bad:
        raise MfnsInputError(f"ages: missing or non-numeric age for {len(bad)} case(s): {', '.join(bad[:20])}")
    if len(ages) < n_groups:
        raise MfnsInputError(f"ages: {len(ages)} case(s) cannot fill {n_groups} groups; at least {n_groups} are needed")

    rng = np.random.default_rng(int(seed))
    cases = sorted(ages)  # fixed order before drawing, so the result does not depend on dict order
    tie_break = rng.random(len(cases))
    order = sorted(range(len(cases)), key=lambda i: (float(ages[cases[i]]), tie_break[i]))
    group_of_position = rng.permutation(n_groups)
    groups: list[list[str]] = [[] for _ in range(n_groups)]
    for rank, pos in zip(order, _snake_positions(len(cases), n_groups)):
        groups[int(group_of_position[pos])].append(cases[rank])
    groups = [sorted(g) for g in groups]

    val_of = _seeded_derangement(n_groups, rng)
    folds = []
    for k in range(n_groups):
        v = val_of[k]
        train = sorted(c for g in range(n_groups) if g not in (k, v) for c in groups[g])
        folds.append({"fold": k, "test_group": k, "val_group": v, "train": train,
                      "val": list(groups[v]), "test": list(groups[k])})

    group_stats = []
    for g, members in enumerate(groups):
        group_ages = [float(ages[c]) for c in members]
        stat = {"group": g, "n": len(members), "age_mean": float(np.mean(group_ages)), "age_sd": _sd(group_ages),
                "n_F": None, "n_M": None}
        if sexes is not None:
            stat["n_F"] = sum(1 for c in members if sexes.get(c) == "F")
            stat["n_M"] = sum(1 for c in members if sexes.get(c) == "M")
        group_stats.append(stat)
    return {"seed": int(seed), "n_groups": n_groups, "groups": groups, "group_stats": group_stats, "folds": folds}


def nnunet_splits(splits: dict) -> list[dict[str, list[str]]]:
    """The nnU-Net `splits_final.json` content: one {"train", "val"} per fold, in fold order."""
    return [{"train": list(f["train"]), "val": list(f["val"])} for f in sorted(splits["folds"], key=lambda f: f["fold"])]


def write_splits(splits: dict, preprocessed_dataset_dir: str | Path, raw_dataset_dir: str | Path | None = None,
                 overwrite: bool = False) -> list[Path]:
    """Write `splits_final.json` (nnU-Net format) and `mfns_splits.json` (everything) into the
    preprocessed dataset folder (created if needed) and, if given, into the raw dataset folder.

    The raw folder also receives a copy of `splits_final.json`: nnU-Net's planner copies a raw
    `splits_final.json` into the preprocessed folder when that has none, so the folds survive a user
    deleting and re-running preprocessing. Refuses to replace existing files unless `overwrite`.
    Returns the written paths.
    """
    targets: list[tuple[object, Path]] = []
    pre = Path(preprocessed_dataset_dir)
    content_nnunet = nnunet_splits(splits)
    targets += [(content_nnunet, pre / NNUNET_SPLITS_FILE), (splits, pre / MFNS_SPLITS_FILE)]
    if raw_dataset_dir is not None:
        raw = Path(raw_dataset_dir)
        if not raw.is_dir():
            raise MfnsInputError(f"{raw}: raw dataset folder does not exist")
        targets += [(content_nnunet, raw / NNUNET_SPLITS_FILE), (splits, raw / MFNS_SPLITS_FILE)]
    existing = [p for _, p in targets if p.exists()]
    if existing and not overwrite:
        raise MfnsInputError(f"{existing[0]}: splits already exist; pass --overwrite to replace them"
                             + (f" (and {len(existing) - 1} more file(s))" if len(existing) > 1 else ""))
    pre.mkdir(parents=True, exist_ok=True)
    for content, path in targets:
        write_json_atomic(content, path, trailing_newline=False)
    return [p for _, p in targets]


def load_splits(dataset_dir: str | Path) -> dict:
    """Read `mfns_splits.json` from a raw or preprocessed dataset folder."""
    path = Path(dataset_dir) / MFNS_SPLITS_FILE
    splits = read_json_file(path, "run mfns-make-splits first")
    if not isinstance(splits, dict) or "folds" not in splits or "groups" not in splits:
        raise MfnsInputError(f"{path}: not an mfns splits file (keys 'groups' and 'folds' missing)")
    return splits


def splits_from_subjects(subjects_doc: dict, seed: int, n_groups: int = 5, source: str = "subjects.json") -> dict:
    """Age-stratified splits over the training cases (set == 'train') of a subjects.json document."""
    train = {c: e for c, e in subjects_doc["subjects"].items() if e.get("set", "train") == "train"}
    missing = sorted(c for c, e in train.items()
                     if not isinstance(e.get("age"), (int, float)) or isinstance(e.get("age"), bool)
                     or not math.isfinite(e["age"]))
    if missing:
        raise MfnsInputError(f"{source}: no numeric age for training case(s) {', '.join(missing[:20])}"
                             + (" ..." if len(missing) > 20 else ""))
    ages = {c: float(e["age"]) for c, e in train.items()}
    sexes = {c: e.get("sex") for c, e in train.items()}
    return make_age_stratified_splits(ages, seed=seed, n_groups=n_groups, sexes=sexes)


def format_group_table(splits: dict) -> str:
    """Human-readable per-group table (n, age mean/SD, sex counts) and per-fold roles."""
    lines = [f"age-stratified splits: {splits['n_groups']} groups, seed {splits['seed']}",
             f"{'group':>5} {'n':>3} {'age mean':>8} {'age SD':>6} {'F':>3} {'M':>3}"]
    for s in splits["group_stats"]:
        nf = "-" if s["n_F"] is None else str(s["n_F"])
        nm = "-" if s["n_M"] is None else str(s["n_M"])
        lines.append(f"{s['group']:>5} {s['n']:>3} {s['age_mean']:>8.1f} {s['age_sd']:>6.1f} {nf:>3} {nm:>3}")
    for f in splits["folds"]:
        lines.append(f"fold {f['fold']}: test = group {f['test_group']} ({len(f['test'])}), "
                     f"val = group {f['val_group']} ({len(f['val'])}), train = {len(f['train'])} cases")
    return "\n".join(lines)
