"""Prediction folders of several trainings per fold (`mfns-compare --seeds K`): which seed each folder is.

mfns-compare writes seed k's predictions to `<workdir>/predictions*/<method>/seed_k/fold_f`, so a folder whose
parent is named `seed_k` holds seed k's predictions. The report evaluates each seed's folders as one set (a
case then appears once per seed) and adds a `seed` column to metrics.csv; fold_stats.py pairs by (case, seed)
and tests at the level of fold x seed. Counts and pictures use the first seed's predictions.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from nnunetv2_mfns.errors import MfnsInputError

SEED_FOLDER = re.compile(r"seed_(\d+)")


def folder_seed(folder: Path) -> Optional[int]:
    m = SEED_FOLDER.fullmatch(Path(folder).parent.name)
    return int(m.group(1)) if m else None


def split_by_seed(pred_dirs: dict[str, Path | list[Path]]) -> dict[Optional[int], dict[str, list[Path]]]:
    """{seed: {method: folders}}, seeds ascending; {None: pred_dirs} when no folder is a seed folder. Every
    method must then have every seed (a comparison pairs the same seeds)."""
    groups: dict[Optional[int], dict[str, list[Path]]] = {}
    for method, dirs in pred_dirs.items():
        for d in (dirs if isinstance(dirs, (list, tuple)) else [dirs]):
            groups.setdefault(folder_seed(d), {}).setdefault(method, []).append(Path(d))
    if None in groups and len(groups) > 1:
        d = groups[None][next(iter(groups[None]))][0]
        raise MfnsInputError(f"{d}: prediction folder without a seed_K parent among folders of several seeds")
    for seed, group in groups.items():
        lacking = [m for m in pred_dirs if m not in group]
        if lacking:
            raise MfnsInputError(f"--pred: method {lacking[0]!r} has no prediction folder for seed {seed} "
                                 f"(every method needs the same seeds)")
    return dict(sorted(groups.items(), key=lambda kv: -1 if kv[0] is None else kv[0]))


def evaluate_by_seed(groups: dict[Optional[int], dict[str, list[Path]]],
                     evaluate: Callable[[dict[str, list[Path]]], pd.DataFrame]) -> pd.DataFrame:
    """evaluate(group) per seed, concatenated with a `seed` column (none without seeds); attrs of the first
    (method order, lesion rule) kept, `missing` cases named with their seed."""
    if list(groups) == [None]:
        return evaluate(groups[None])
    frames, missing, attrs = [], {}, {}
    for seed, group in groups.items():
        df = evaluate(group)
        attrs = attrs or dict(df.attrs)
        for m, cases in df.attrs.get("missing", {}).items():
            missing.setdefault(m, []).extend(f"{c} (seed {seed})" for c in cases)
        frames.append(df.assign(seed=seed))
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(attrs, missing=missing)
    return out


def first_seed(groups: dict[Optional[int], dict[str, list[Path]]]) -> dict[str, list[Path]]:
    return groups[next(iter(groups))]
