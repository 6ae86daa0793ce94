"""Learning-curve tables and figures (issue 10): the `learning_curve.csv` files that the study trainers write
(`nnunetv2_mfns/trainers/learning_curve.py`) pooled per method over folds, the plateau rule, the PNG and the
README of a `docs/results/*curve*` folder, and a copy of the raw per-fold files.

A method is named from its nnU-Net results folder `<trainer>__<plans>__<configuration>`: the budget suffix is
dropped and the trainer + configuration is mapped back to its `mfns-compare` name where it has one
(`nnUNetTrainer_study` in 2d -> `nnUNet_2d`, in 3d_fullres -> `nnUNet_3d`). Used by
`benchmarks/learning_curves.py report`.
"""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from nnunetv2_mfns.budget_table import BUDGETS
from nnunetv2_mfns.orchestration.methods import NAMED_METHODS

from .convergence import CURVE_FILE, read_curve_rows

CSV_FIELDS = ["method", "trainer", "configuration", "fold", "epoch", "iterations", "cpu_s", "wall_s",
              "pseudo_dice", "ema_pseudo_dice", "group", "case", "dsc", "sen", "ppv"]
# budget suffixes of the trainer classes whose curves are read (`_study` from mfns-compare, `__curveExI` from
# benchmarks/learning_curves.py run)
BUDGET_SUFFIX = re.compile(r"(__curve\d+x\d+|_(" + "|".join(BUDGETS) + r"))$")


def method_name(trainer: str, configuration: str) -> str:
    """A results folder's trainer + configuration -> the method's name (mfns-compare's name where there is one)."""
    base = BUDGET_SUFFIX.sub("", trainer)
    named = next((name for name, (conf, tr) in NAMED_METHODS.items() if (conf, tr) == (configuration, base)), None)
    return named or (base if configuration == "2d" else f"{base}@{configuration}")


def _curve_files(results: Path) -> List[Path]:
    return sorted(Path(results).glob(f"*__*__*/fold_*/{CURVE_FILE}"))


def collect_rows(results: Path) -> List[dict]:
    """Every learning_curve.csv under an nnU-Net results dataset folder
    (``<trainer>__<plans>__<configuration>/fold_k/``), each row with its ``method`` name."""
    rows = []
    for path in _curve_files(results):
        trainer, _, configuration = path.parent.parent.name.split("__")
        rows.extend(dict(r, method=method_name(trainer, configuration)) for r in read_curve_rows(path))
    return rows


def copy_raw_curves(results: Path, raw: Path) -> List[Path]:
    """Copies every learning_curve.csv under ``results`` to ``raw/<results folder>/fold_k.csv``, finished or
    not. Named by nnU-Net's results folder, not by trainer: stock 2d and 3d_fullres share a trainer class."""
    copied = []
    for path in _curve_files(results):
        dest = Path(raw) / path.parent.parent.name / f"{path.parent.name}.csv"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        copied.append(dest)
    return copied


def summarise(rows: List[dict]) -> Dict[str, List[dict]]:
    """method -> [{iterations, n_folds, n_cases, cpu_s, wall_s, dsc, sen, ppv, pseudo_dice}] sorted by
    iterations: means over every validation case of every fold with that point (cpu/wall: mean over folds)."""
    by: Dict[Tuple[str, int], List[dict]] = {}
    for r in rows:
        by.setdefault((r["method"], int(r["iterations"])), []).append(r)
    out: Dict[str, List[dict]] = {}
    for (method, it), rs in sorted(by.items()):
        per_fold = {r["fold"]: r for r in rs}
        point = {"iterations": it, "n_folds": len(per_fold), "n_cases": len(rs),
                 "folds": ",".join(sorted(per_fold)),
                 "cpu_s": float(np.mean([float(r["cpu_s"]) for r in per_fold.values()])),
                 "wall_s": float(np.mean([float(r["wall_s"]) for r in per_fold.values()])),
                 "pseudo_dice": float(np.mean([float(r["pseudo_dice"]) for r in per_fold.values()]))}
        for m in ("dsc", "sen", "ppv"):
            point[m] = float(np.mean([float(r[m]) for r in rs]))
        out.setdefault(method, []).append(point)
    return out


def finished_folds_only(rows: List[dict], budget_its: int) -> Tuple[List[dict], Dict[str, List[str]]]:
    """Per method, the rows of the folds that reached ``budget_its`` (all its rows when none has yet), and
    per method the folds left out because they are still training."""
    reached: Dict[Tuple[str, str], int] = {}
    for r in rows:
        key = (r["method"], r["fold"])
        reached[key] = max(reached.get(key, 0), int(r["iterations"]))
    finished = {m for (m, f), it in reached.items() if it >= budget_its}
    unfinished: Dict[str, List[str]] = {}
    for (m, f), it in sorted(reached.items()):
        if m in finished and it < budget_its:
            unfinished.setdefault(m, []).append(f"fold {f} at {it}")
    kept = [r for r in rows if r["method"] not in finished or reached[(r["method"], r["fold"])] >= budget_its]
    return kept, unfinished


def complete_points(points: List[dict]) -> List[dict]:
    """The points every fold of the method reached (a curve mixing folds at its end would jump)."""
    n = max(p["n_folds"] for p in points)
    return [p for p in points if p["n_folds"] == n]


def plateau_stats(points: List[dict], key: str = "dsc", n_last: int = 3) -> Tuple[float, Optional[int], float]:
    """(plateau = mean of the last ``n_last`` points, first iteration count reaching 95% of it,
    rise over those last points = last value minus the value ``n_last - 1`` points earlier)."""
    vals = [p[key] for p in points]
    tail = vals[-n_last:]
    plateau = sum(tail) / len(tail)
    reach = next((p["iterations"] for p in points if p[key] >= 0.95 * plateau), None)
    return plateau, reach, tail[-1] - tail[0]


def plot(curves: Dict[str, List[dict]], png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, pts in curves.items():
        pts = complete_points(pts)
        for ax, x in zip(axes, ("iterations", "cpu_s")):
            line, = ax.plot([p[x] for p in pts], [p["dsc"] for p in pts], marker="o", ms=3,
                            label=f"{method} ({pts[-1]['n_folds']} fold{'s' if pts[-1]['n_folds'] > 1 else ''})")
            ax.plot([p[x] for p in pts], [p["pseudo_dice"] for p in pts], ls=":", color=line.get_color(), lw=1)
    axes[0].set_xlabel("training iterations")
    axes[1].set_xlabel("training CPU seconds per fold (process time, evaluation excluded)")
    values = [v for pts in curves.values() for p in complete_points(pts) for v in (p["dsc"], p["pseudo_dice"])]
    for ax in axes:
        ax.set_ylabel("DSC")
        # zoomed to the data (the differences between methods are a few DSC points), never beyond [0, 1]
        ax.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}\nsolid: DSC of our evaluation on the folds' validation cases; dotted: nnU-Net "
                 "pseudo-Dice (validation patches)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_outputs(rows: List[dict], out: Path, meta: dict) -> None:
    if not rows:
        raise SystemExit("no learning-curve rows found (learning_curve.csv in the results folders)")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "learning_curves.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    budget_its = meta.get("budget_iterations") or max(int(r["iterations"]) for r in rows)
    # a method's curve pools the folds that finished; folds still training are named, not mixed in
    pooled, unfinished = finished_folds_only(rows, budget_its)
    curves = summarise(pooled)
    plot(curves, out / "learning_curves.png", meta.get("title", "learning curves"))
    commands = meta.get("commands") or [meta.get("command", "")]
    lines = [f"# Learning curves: {meta.get('title', '')}", "",
             "- command(s): " + "; ".join(f"`{c}`" for c in commands),
             f"- seed: {meta.get('seed')} (phantom, splits, training; a resumed run reseeds with seed + epoch)",
             f"- machine: {meta.get('machine', '')}", f"- versions: {meta.get('versions', '')}",
             f"- budget: {meta.get('budget', '')} ({budget_its} iterations)",
             "- evaluated on each fold's validation group with `nnunetv2_mfns.evaluation.metrics.evaluate_case` "
             "(nnU-Net sliding window, no mirroring); DSC = mean over every validation case of the folds listed",
             "- files: `learning_curves.csv` (one row per case, fold and evaluation point), `learning_curves.png` "
             "(DSC vs iterations and vs CPU seconds; dotted = nnU-Net pseudo-Dice)", "",
             "| method | folds | validation cases | eval points | last point (iterations) | DSC at last point | "
             "SEN / PPV at last point | plateau (mean of last 3) | rise over last 3 points | iterations to 95% of "
             "plateau | CPU s per iteration |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method, pts in curves.items():
        pts_c = complete_points(pts)
        last = pts_c[-1]
        plateau, reach, rise = plateau_stats(pts_c)
        if last["iterations"] < budget_its:  # stopped early: no plateau to speak of
            plateau_txt, reach_txt = f"n/a (ends at {last['iterations']} of {budget_its})", "n/a"
        else:
            plateau_txt, reach_txt = f"{plateau:.3f}", str(reach)
        lines.append(f"| {method} | {last['folds']} | {last['n_cases']} | {len(pts_c)} | {last['iterations']} | "
                     f"{last['dsc']:.3f} | {last['sen']:.3f} / {last['ppv']:.3f} | {plateau_txt} | {rise:+.3f} | "
                     f"{reach_txt} | {last['cpu_s'] / last['iterations']:.2f} |")
    if unfinished:
        lines += ["", "Unfinished folds (still training or stopped before the budget), not pooled above: " +
                  "; ".join(f"{m}: {', '.join(v)} iterations" for m, v in unfinished.items()) + "."]
    lines += ["", "## DSC (validation cases, folds reached by every point) by iteration", "",
              "| iterations | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    for it in sorted({p["iterations"] for pts in curves.values() for p in pts}):
        vals = []
        for pts in curves.values():
            p = next((q for q in pts if q["iterations"] == it), None)
            vals.append("" if p is None else f"{p['dsc']:.3f} ({p['n_folds']}f)")
        lines.append(f"| {it} | " + " | ".join(vals) + " |")
    if meta.get("notes"):
        lines += ["", "## Notes", "", meta["notes"]]
    (out / "README.md").write_text("\n".join(lines) + "\n")
