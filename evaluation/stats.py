"""Per-method summaries (Table-2 style), the metric names and labels, and the Markdown table helper.

* summary: mean +/- SD (ddof 1) over cases of each metric per method; NaN values (undefined ratios, see
  metrics.py) are skipped and `n` says how many cases entered each number.
* paired comparisons against the reference: fold_stats.py (tests at the level of independent trainings,
  Holm correction; the per-case Wilcoxon survives there only as a secondary column).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

SUMMARY_METRICS = ("dsc", "sen", "ppv", "lesion_recall", "lesion_precision", "lesion_f1", "vol_true_mm3",
                   "vol_pred_mm3", "n_true_components", "n_pred_components", "hd95_mm")
TEST_METRICS = ("dsc", "sen", "ppv", "lesion_f1")
TABLE2_METRICS = ("dsc", "sen", "ppv", "lesion_recall", "lesion_precision", "lesion_f1", "hd95_mm")
METRIC_LABELS = {"dsc": "DSC", "sen": "SEN", "ppv": "PPV", "lesion_recall": "lesion recall",
                 "lesion_precision": "lesion precision", "lesion_f1": "lesion F1", "hd95_mm": "HD95 (mm)",
                 "vol_true_mm3": "true volume (mm^3)", "vol_pred_mm3": "pred. volume (mm^3)",
                 "n_true_components": "true components", "n_pred_components": "pred. components"}


def method_order(df: pd.DataFrame, reference: str | None = None) -> list[str]:
    """Methods in the order they were given (df.attrs["methods"], set by evaluate_folders) or first-seen
    order, the reference first when present."""
    seen = list(dict.fromkeys(df["method"]))
    given = [m for m in df.attrs.get("methods", []) if m in set(seen)]
    methods = given + [m for m in seen if m not in set(given)]
    if reference in methods:
        methods.remove(reference)
        methods.insert(0, reference)
    return methods


def summary_table(metrics: pd.DataFrame, reference: str | None = None,
                  metric_names: tuple[str, ...] = SUMMARY_METRICS) -> pd.DataFrame:
    """Long table: method, metric, n, mean, sd, median, min, max (NaN-skipping)."""
    rows = []
    for method in method_order(metrics, reference):
        sub = metrics[metrics["method"] == method]
        for metric in metric_names:
            v = sub.loc[sub["metric"] == metric, "value"].to_numpy(float)
            if v.size == 0:
                continue
            v = v[np.isfinite(v)]
            n = int(v.size)
            rows.append({"method": method, "metric": metric, "n": n,
                         "mean": float(v.mean()) if n else math.nan,
                         "sd": float(v.std(ddof=1)) if n >= 2 else math.nan,
                         "median": float(np.median(v)) if n else math.nan,
                         "min": float(v.min()) if n else math.nan, "max": float(v.max()) if n else math.nan})
    return pd.DataFrame(rows, columns=["method", "metric", "n", "mean", "sd", "median", "min", "max"])


def _fmt(x: float, digits: int = 3) -> str:
    return "NaN" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """GitHub Markdown table (tabulate is not a dependency, and this is all we need of it)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summary_markdown(summary: pd.DataFrame, metric_names: tuple[str, ...] = TABLE2_METRICS) -> str:
    """Table 2 of the paper: one row per method, mean +/- SD per metric, n cases."""
    present = [m for m in metric_names if m in set(summary["metric"])]
    rows = []
    for method in dict.fromkeys(summary["method"]):
        sub = summary[summary["method"] == method].set_index("metric")
        n_metric = "dsc" if "dsc" in sub.index else (present[0] if present else None)
        n = int(sub.loc[n_metric, "n"]) if n_metric is not None else 0
        cells = [method, str(n)]
        for m in present:
            if m in sub.index:
                digits = 2 if m == "hd95_mm" else 3
                cells.append(f"{_fmt(sub.loc[m, 'mean'], digits)} ± {_fmt(sub.loc[m, 'sd'], digits)}")
            else:
                cells.append("")
        rows.append(cells)
    return markdown_table(["method", "n (DSC)"] + [METRIC_LABELS.get(m, m) for m in present], rows)
