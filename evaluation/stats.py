"""Per-method summaries (Table-2 style) and paired comparisons against a reference method.

* summary: mean +/- SD (ddof 1) over cases of each metric per method; NaN values (undefined ratios, see
  metrics.py) are skipped and `n` says how many cases entered each number.
* paired tests: for each method other than the reference and each metric, the cases where both methods
  have a finite value are paired; the two-sided Wilcoxon signed-rank test (scipy.stats.wilcoxon, exact
  distribution where scipy chooses it, zero differences handled by scipy's default 'wilcox' rule) is run
  on (method, reference), and a paired bootstrap 95% CI of the mean difference (method - reference) is
  drawn by resampling cases with replacement (scipy.stats.bootstrap, percentile method, seeded; the seed
  and the number of resamples are written next to every CI). With fewer than 2 pairs, or all differences
  zero, the value is NaN and `note` says why; nothing raises.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

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


def _fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "NaN"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


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


def paired_tests(metrics: pd.DataFrame, reference: str = "MfNS_De", metric_names: tuple[str, ...] = TEST_METRICS,
                 n_boot: int = 10000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Wilcoxon signed-rank test and paired bootstrap CI of each method vs the reference, per metric.

    Columns: method, reference, metric, n, mean_method, mean_reference, mean_diff (method - reference),
    ci_low, ci_high, wilcoxon_stat, p_value, n_boot, seed, note. Empty when the reference is absent or is the
    only method.
    """
    cols = ["method", "reference", "metric", "n", "mean_method", "mean_reference", "mean_diff", "ci_low",
            "ci_high", "wilcoxon_stat", "p_value", "n_boot", "seed", "note"]
    methods = method_order(metrics, reference)
    if reference not in methods:
        return pd.DataFrame(columns=cols)
    wide = metrics.pivot_table(index="case", columns=["metric", "method"], values="value", aggfunc="first")
    rows = []
    for method in methods:
        if method == reference:
            continue
        for metric in metric_names:
            if (metric, method) not in wide.columns or (metric, reference) not in wide.columns:
                continue
            pair = wide[[(metric, method), (metric, reference)]].dropna()
            a, b = pair.iloc[:, 0].to_numpy(float), pair.iloc[:, 1].to_numpy(float)
            rows.append({"method": method, "reference": reference, "metric": metric,
                         **paired_comparison(a, b, n_boot=n_boot, seed=seed, confidence=confidence)})
    return pd.DataFrame(rows, columns=cols)


def paired_comparison(a: np.ndarray, b: np.ndarray, n_boot: int = 10000, seed: int = 0,
                      confidence: float = 0.95) -> dict:
    """Wilcoxon signed-rank (a vs b) and the seeded paired bootstrap CI of mean(a - b)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = int(a.size)
    d = a - b
    res = {"n": n, "mean_method": float(a.mean()) if n else math.nan,
           "mean_reference": float(b.mean()) if n else math.nan, "mean_diff": float(d.mean()) if n else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "wilcoxon_stat": math.nan, "p_value": math.nan,
           "n_boot": int(n_boot), "seed": int(seed)}
    notes = []
    if n < 2:
        notes.append(f"n = {n} < 2 paired cases: no test, no CI")
    elif np.all(d == 0):
        notes.append("all paired differences are zero: test undefined")
        res.update(ci_low=0.0, ci_high=0.0)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = stats.wilcoxon(a, b)
            boot = stats.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=confidence,
                                   method="percentile", rng=np.random.default_rng(seed))
        res.update(wilcoxon_stat=float(w.statistic), p_value=float(w.pvalue),
                   ci_low=float(boot.confidence_interval.low), ci_high=float(boot.confidence_interval.high))
        if n < 6:
            notes.append(f"n = {n}: the smallest two-sided Wilcoxon p is {2 / 2 ** n:.3g}, so p < 0.05 is impossible")
    res["note"] = "; ".join(notes)
    return res


def stats_markdown(tests: pd.DataFrame) -> str:
    if tests.empty:
        return "_No paired comparison: the reference method is absent or is the only method._"
    rows = []
    for _, r in tests.iterrows():
        rows.append([r["method"], r["reference"], METRIC_LABELS.get(r["metric"], r["metric"]), int(r["n"]),
                     f"{_fmt(r['mean_diff'])}", f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", _fmt_p(r["p_value"]),
                     r["note"] or ""])
    return markdown_table(["method", "reference", "metric", "n", "mean diff (method - ref)", "95% bootstrap CI",
                           "Wilcoxon p", "note"], rows)
