"""False positives by cause (issue 23; the paper's Figure 4 argument, measured): for every method, how many of
its false-positive voxels and components lie inside each confounder type of the phantom.

Input: per case a confounder map, a uint8 bit field with one bit per type (`hard.CONFOUNDER_BITS`: sulcus 1,
lacune 2, WMH 4, flow void 8, slightly hyperintense focus 16, cortical rim 32), written by `mfns-make-phantom
--profile hard` as `confounders/<case>.nii.gz` and named by subjects.json (`confounder_map`). Datasets
without maps (other profiles, real cohorts) have no such section.

Definitions (truth = the report's ground-truth folder; for the hard profile the exact labels):
- FP voxels = prediction AND NOT truth. `fp_voxels[type]` = FP voxels whose map has that type's bit; a voxel
  carrying two types (a sulcus in the rim) counts under both, so the types do not add up to the total;
  `none` = FP voxels outside every map.
- FP components = 3D connected components (26-connectivity) of the FP voxels; a component counts under a
  type when at least one of its voxels carries the bit (again possibly several types), `none` when none do.
Tables are summed over the cases each method predicted; `share` = type's FP voxels / all FP voxels.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from nnunetv2_mfns.errors import MfnsInputError

from .io import FILE_ENDING, read_binary_mask, read_checked

logger = logging.getLogger(__name__)

# same values as dataset_conversion/phantom/hard.CONFOUNDER_BITS (kept here so evaluation needs no phantom code)
CONFOUNDER_BITS: dict[str, int] = {"sulcus": 1, "lacune": 2, "wmh": 4, "flow_void": 8, "hyperintense": 16, "rim": 32}
TYPES = list(CONFOUNDER_BITS) + ["none"]
TABLE_FILE = "confounder_fp.csv"
FIGURE_FILE = "fig_confounder_fp.png"
FILES = [TABLE_FILE, FIGURE_FILE]
COLUMNS = ["case", "method", "type", "fp_voxels", "fp_components", "fp_voxels_total", "fp_components_total"]


def confounder_map_path(subjects: dict | None, dataset_dir: Path, case: str) -> Path | None:
    """subjects.json's `confounder_map` of the case, else confounders/<case>.nii.gz if present."""
    entry = ((subjects or {}).get("subjects") or {}).get(case) or {}
    rel = entry.get("confounder_map")
    p = Path(dataset_dir) / rel if rel else Path(dataset_dir) / "confounders" / f"{case}{FILE_ENDING}"
    if rel and not p.is_file():
        raise MfnsInputError(f"{p}: confounder map of case {case} named in subjects.json is missing")
    return p if p.is_file() else None


def fp_by_type(pred: np.ndarray, truth: np.ndarray, cmap: np.ndarray) -> dict[str, tuple[int, int]]:
    """{type: (FP voxels, FP components)} of one prediction (see the module docstring), plus 'total'."""
    if not (pred.shape == truth.shape == cmap.shape):
        raise MfnsInputError(f"confounder FP: shapes differ (prediction {pred.shape}, truth {truth.shape}, "
                             f"map {cmap.shape})")
    fp = pred.astype(bool) & ~truth.astype(bool)
    cm = cmap.astype(np.uint8)
    lab, n = ndimage.label(fp, structure=np.ones((3, 3, 3), bool))
    out = {"total": (int(fp.sum()), int(n))}
    fl, fc = lab[fp], cm[fp]
    for t, bit in CONFOUNDER_BITS.items():
        hit = (fc & bit) > 0
        out[t] = (int(hit.sum()), int(np.unique(fl[hit]).size))
    nomap = fc == 0
    any_map = np.unique(fl[~nomap])
    out["none"] = (int(nomap.sum()), int(n - any_map.size))
    return out


def confounder_fp_table(gt_dir: Path, pred_files: dict[str, dict[str, Path]], subjects: dict | None,
                        dataset_dir: Path, cases: list[str]) -> pd.DataFrame:
    """Tidy per-case table (COLUMNS) over every case with a confounder map and a prediction."""
    rows = []
    for case in cases:
        mp = confounder_map_path(subjects, dataset_dir, case)
        if mp is None:
            continue
        cmap = read_checked(mp, "confounder map", "region").array  # non-negative integers: the bit field
        truth = read_binary_mask(Path(gt_dir) / f"{case}{FILE_ENDING}", role="label")[0]
        if cmap.shape != truth.shape:
            raise MfnsInputError(f"{mp}: shape {cmap.shape} differs from the label's {truth.shape}")
        for method, files in pred_files.items():
            if case not in files:
                continue
            res = fp_by_type(read_binary_mask(files[case], role="prediction")[0], truth, cmap)
            for t in TYPES:
                rows.append((case, method, t, *res[t], *res["total"]))
    return pd.DataFrame(rows, columns=COLUMNS)


def summarise(table: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per method and type: FP voxels and components summed over cases, share of all FP voxels, cases."""
    if table.empty:
        return pd.DataFrame(columns=["method", "type", "fp_voxels", "fp_components", "share", "n_cases"])
    g = table.groupby(["method", "type"], sort=False).agg(fp_voxels=("fp_voxels", "sum"),
                                                           fp_components=("fp_components", "sum"),
                                                           n_cases=("case", "nunique")).reset_index()
    tot = table.drop_duplicates(["case", "method"]).groupby("method")["fp_voxels_total"].sum()
    g["share"] = g["fp_voxels"] / g["method"].map(tot).replace(0, np.nan)
    order = {m: i for i, m in enumerate(methods)}
    g["_m"], g["_t"] = g["method"].map(order).fillna(len(order)), g["type"].map(TYPES.index)
    return g.sort_values(["_m", "_t"]).drop(columns=["_m", "_t"]).reset_index(drop=True)


def fig_confounder_fp(summary: pd.DataFrame, path: Path, methods: list[str]) -> None:
    """Grouped bars: share of each method's FP voxels inside each confounder type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [m for m in methods if m in set(summary["method"])]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(TYPES) * max(len(ms), 1) ** 0.5 + 2), 3.6))
    w = 0.8 / max(len(ms), 1)
    x = np.arange(len(TYPES))
    for i, m in enumerate(ms):
        s = summary[summary["method"] == m].set_index("type").reindex(TYPES)
        ax.bar(x + (i - (len(ms) - 1) / 2) * w, s["share"].fillna(0).to_numpy(), width=w, label=m)
    ax.set_xticks(x, TYPES)
    ax.set_ylabel("share of the method's FP voxels")
    ax.set_title("False positives by cause (a voxel may lie in several types)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_confounder_fp(out_dir: Path, table: pd.DataFrame, methods: list[str]) -> list[str]:
    """Writes confounder_fp.csv and its figure from `confounder_fp_table`'s result (read before the report's
    folder is touched, so a bad map refuses the run instead of half-writing it); returns the report section
    (empty when the dataset has no maps)."""
    if table.empty:
        return []
    table.to_csv(Path(out_dir) / TABLE_FILE, index=False)
    summ = summarise(table, methods)
    fig_confounder_fp(summ, Path(out_dir) / FIGURE_FILE, methods)
    lines = ["## False positives by cause", "",
             f"False-positive voxels (prediction and not truth) and 3D FP components (26-connectivity) inside each "
             f"confounder type of the phantom's maps (`confounders/`), summed over {table['case'].nunique()} cases; "
             "a voxel in two types (e.g. a sulcus in the cortical rim) counts under both, `none` = outside every map; "
             f"share = of the method's FP voxels. Per case in [{TABLE_FILE}]({TABLE_FILE}).", "",
             "| method | " + " | ".join(TYPES) + " | all FP voxels |", "|---|" + "---|" * (len(TYPES) + 1)]
    for m in [m for m in methods if m in set(summ["method"])]:
        s = summ[summ["method"] == m].set_index("type").reindex(TYPES)
        total = int(table[table["method"] == m].drop_duplicates("case")["fp_voxels_total"].sum())
        cells = [f"{int(v)} / {int(c)} ({sh:.0%})" if np.isfinite(sh) else f"{int(v)} / {int(c)}"
                 for v, c, sh in zip(s["fp_voxels"], s["fp_components"], s["share"])]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {total} |")
    lines += ["", "Cells: FP voxels / FP components (share of FP voxels).", "",
              f"![False positives by cause]({FIGURE_FILE})", ""]
    return lines
