"""Paired comparisons at the level of independent trainings (folds, or fold x seed), with Holm correction.

Why not per case: the test cases of one fold are all predicted by the same trained model, so their paired
differences share that model's luck (initialisation, data order, which checkpoint nnU-Net kept). A per-case
test treats 8 cases from 2 folds as 8 independent replications when there were 2 trainings; its p-value
and its case-resampling CI then overstate the evidence (docs/head_to_head.md, "Statistics"). Here the
unit of replication is one training: a fold, or a fold x seed pair when `mfns-compare --seeds K` trained
each fold several times (metrics then carry a `seed` column).

Per comparison (method vs reference, one metric), over the cases where both have a finite value, paired
by case (and seed), never by position:
    * mean_method, mean_reference: both means on the SAME paired cases (the reference's mean over all
      of its own cases is not comparable when the method has fewer folds);
    * unit_diffs: the mean paired difference of each unit (fold or fold x seed), e.g. "f0 +0.010; f1 +0.014";
    * a one-sample t-test of the unit differences (df = n_units - 1) with its t confidence interval;
    * the exact sign-flip (permutation) test of the unit differences: all 2^n sign patterns, statistic
      |mean|; assumption-free, but its smallest possible two-sided p is 2 / 2^n (0.5 with 2 folds, 0.0625
      with 5), which `p_signflip_min` states;
    * a cluster bootstrap CI resampling units with replacement (statistic: mean paired difference over the
      cases of the resampled units; BCa via scipy.stats.bootstrap), given from MIN_BOOT_UNITS = 5 units on:
      with 2 or 3 units there are only 3 or 10 distinct resamples and the interval is far too narrow; even
      at 5-10 units it undercovers, so the t-interval is the primary one;
    * Holm's step-down adjustment of the fold-level t p-values over every row of the table
      (`p_holm`), and of the sign-flip p-values (`p_signflip_holm`); `significant` = p_holm < alpha;
    * the per-case Wilcoxon signed-rank p as a secondary, labelled column (`p_wilcoxon_cases`): it
      treats cases as independent, which they are not.
statsmodels (a mixed-effects model with a random fold effect) is not a dependency; with 2-5 folds the
variance of the fold effect is barely estimable anyway, and the t-test over fold means is the exact
balanced-design equivalent of such a model's test of the fixed effect.
"""
from __future__ import annotations

import itertools
import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
MIN_BOOT_UNITS = 5
FOLD_TEST_COLUMNS = ["method", "reference", "metric", "n", "n_units", "unit", "units", "mean_method",
                     "mean_reference", "mean_diff", "unit_diffs", "unit_mean_diff", "t_stat", "t_df", "p_t",
                     "t_ci_low", "t_ci_high", "p_signflip", "p_signflip_min", "boot_ci_low", "boot_ci_high",
                     "n_boot", "seed", "wilcoxon_stat", "p_wilcoxon_cases", "p_holm", "p_signflip_holm",
                     "significant", "note"]


def holm_adjust(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family = every finite entry; NaN stays NaN and does not count).

    Sorted ascending p_(1) <= ... <= p_(m): adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def sign_flip_test(d: Sequence[float]) -> tuple[float, float]:
    """Exact two-sided sign-flip test of mean(d) = 0: (p, smallest p attainable with this n).

    Under the null each unit's difference is as likely positive as negative, so all 2^n sign patterns are
    equally likely; p = share of patterns whose |mean| is at least the observed |mean|.
    """
    d = np.asarray(d, float)
    n = d.size
    if n == 0:
        return math.nan, math.nan
    if n > 20:  # 2^20 patterns at most; more units than that would call for a Monte-Carlo version
        raise ValueError(f"exact sign-flip test limited to 20 units, got {n}")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    flipped = np.abs(signs @ d) / n
    observed = abs(d.mean())
    p = float(np.mean(flipped >= observed - 1e-12 * max(1.0, observed)))
    return p, 2.0 / 2 ** n


def t_test_units(d: Sequence[float], confidence: float = 0.95) -> dict:
    """One-sample t-test of the unit differences: t, df, two-sided p, t confidence interval of the mean."""
    d = np.asarray(d, float)
    n = d.size
    res = {"t_stat": math.nan, "t_df": n - 1 if n else 0, "p_t": math.nan, "t_ci_low": math.nan,
           "t_ci_high": math.nan}
    if n < 2:
        return res
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return res
    se = sd / math.sqrt(n)
    t = mean / se
    q = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    res.update(t_stat=t, p_t=float(2 * stats.t.sf(abs(t), n - 1)), t_ci_low=mean - q * se, t_ci_high=mean + q * se)
    return res


def cluster_bootstrap_ci(unit_sums: Sequence[float], unit_counts: Sequence[float], n_boot: int = 10000,
                         seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """BCa CI of sum(d)/count over units resampled with replacement (each unit keeps all its cases)."""
    sums, counts = np.asarray(unit_sums, float), np.asarray(unit_counts, float)

    def ratio(s, c, axis=-1):
        return s.sum(axis=axis) / c.sum(axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((sums, counts), ratio, paired=True, vectorized=True, n_resamples=n_boot,
                              confidence_level=confidence, method="BCa", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _unit_label(fold, seed) -> str:
    f = "f?" if fold is None or (isinstance(fold, float) and math.isnan(fold)) else f"f{int(fold)}"
    return f if seed is None else f"{f}s{seed}"


def compare_units(pairs: pd.DataFrame, n_boot: int = 10000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Every column of FOLD_TEST_COLUMNS from method, reference, metric to note except the Holm ones.

    pairs: one row per paired case with columns `unit` (hashable, e.g. (fold, seed)), `label` (its name),
    `a` (method) and `b` (reference).
    """
    a, b = pairs["a"].to_numpy(float), pairs["b"].to_numpy(float)
    n = int(a.size)
    d = a - b
    per_unit = pairs.assign(d=d).groupby("unit", sort=True).agg(label=("label", "first"), s=("d", "sum"),
                                                                  c=("d", "size"))
    unit_d = (per_unit["s"] / per_unit["c"]).to_numpy(float)
    k = int(unit_d.size)
    res = {"n": n, "n_units": k, "units": ", ".join(per_unit["label"]),
           "mean_method": float(a.mean()) if n else math.nan, "mean_reference": float(b.mean()) if n else math.nan,
           "mean_diff": float(d.mean()) if n else math.nan,
           "unit_diffs": "; ".join(f"{lab} {v:+.3f}" for lab, v in zip(per_unit["label"], unit_d)),
           "unit_mean_diff": float(unit_d.mean()) if k else math.nan,
           "p_signflip": math.nan, "p_signflip_min": math.nan, "boot_ci_low": math.nan, "boot_ci_high": math.nan,
           "n_boot": int(n_boot), "seed": int(seed), "wilcoxon_stat": math.nan, "p_wilcoxon_cases": math.nan}
    res.update(t_test_units(unit_d, confidence))
    notes = []
    if any(lab.startswith("f?") for lab in per_unit["label"]):
        notes.append("cases without a fold (no --splits): one unit holds them all, the fold-level test is not valid")
    if k < 2:
        notes.append(f"{k} training unit(s): no fold-level test")
    elif np.isnan(res["p_t"]):
        notes.append("all unit differences equal: t undefined")
    if k >= 1:
        res["p_signflip"], res["p_signflip_min"] = sign_flip_test(unit_d)
    if k >= MIN_BOOT_UNITS and np.ptp(d) > 0:
        res["boot_ci_low"], res["boot_ci_high"] = cluster_bootstrap_ci(per_unit["s"], per_unit["c"], n_boot, seed,
                                                                      confidence)
    if n >= 2 and np.any(d != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # exact null distribution without ties or zeros (n <= 50); otherwise the normal approximation with
            # tie correction (scipy's permutation fallback costs ~1 s per row and this column is secondary)
            exact = n <= 50 and np.all(d != 0) and np.unique(np.abs(d)).size == n
            w = stats.wilcoxon(a, b, method="exact" if exact else "approx")
        res.update(wilcoxon_stat=float(w.statistic), p_wilcoxon_cases=float(w.pvalue))
    if k >= 1 and res["p_signflip_min"] > ALPHA:
        notes.append(f"sign-flip p cannot be below {res['p_signflip_min']:.3g} with {k} units")
    if len(set(per_unit["c"])) > 1:
        notes.append("units hold different numbers of cases (t-test weights units equally)")
    res["note"] = "; ".join(notes)
    return res


def fold_level_tests(metrics: pd.DataFrame, reference: str = "MfNS_De", metric_names: tuple[str, ...] | None = None,
                     n_boot: int = 10000, seed: int = 0, confidence: float = 0.95,
                     methods: list[str] | None = None) -> pd.DataFrame:
    """One row per (method other than the reference, metric): FOLD_TEST_COLUMNS (module docstring).

    metrics: tidy case, method, fold, metric, value (+ optional seed). Holm runs over every row returned.
    """
    from .stats import TEST_METRICS, method_order
    metric_names = TEST_METRICS if metric_names is None else metric_names
    methods = methods or method_order(metrics, reference)
    if reference not in methods or metrics.empty:
        return pd.DataFrame(columns=FOLD_TEST_COLUMNS)
    has_seed = "seed" in metrics.columns and metrics["seed"].notna().any()
    df = metrics[metrics["metric"].isin(metric_names)].copy()
    df["_seed"] = df["seed"] if has_seed else -1
    # float: evaluate_folders gives a nullable Int64 column whose NA (case of no fold) would not compare
    df["fold"] = pd.to_numeric(df["fold"], errors="coerce").astype(float)
    key = ["case", "_seed", "metric"]
    ref = df[df["method"] == reference].set_index(key)
    rows = []
    for method in methods:
        if method == reference:
            continue
        sub = df[df["method"] == method].set_index(key)
        for metric in metric_names:
            if metric not in set(sub.index.get_level_values("metric")) or \
                    metric not in set(ref.index.get_level_values("metric")):
                continue
            a = sub.xs(metric, level="metric")
            b = ref.xs(metric, level="metric")
            # join on (case, seed): the pairing never depends on row order
            j = a[["value", "fold"]].add_suffix("_a").join(b[["value", "fold"]].add_suffix("_b"), how="inner")
            j = j[np.isfinite(j["value_a"]) & np.isfinite(j["value_b"])]
            fold = j["fold_b"].where(j["fold_b"].notna(), j["fold_a"])
            seeds = j.index.get_level_values("_seed")
            pairs = pd.DataFrame({
                "unit": [(-1 if np.isnan(f) else int(f), s) for f, s in zip(fold, seeds)],
                "label": [_unit_label(None if np.isnan(f) else f, s if has_seed else None) for f, s in zip(fold, seeds)],
                "a": j["value_a"].to_numpy(float), "b": j["value_b"].to_numpy(float)})
            row = {"method": method, "reference": reference, "metric": metric,
                   "unit": "fold x seed" if has_seed else "fold"}
            if pairs.empty:
                row.update(n=0, n_units=0, n_boot=int(n_boot), seed=int(seed), note="no paired cases")
            else:
                row.update(compare_units(pairs, n_boot=n_boot, seed=seed, confidence=confidence))
            rows.append(row)
    out = pd.DataFrame(rows).reindex(columns=FOLD_TEST_COLUMNS)
    if out.empty:
        return out
    out["p_holm"] = holm_adjust(out["p_t"].to_numpy(float))
    out["p_signflip_holm"] = holm_adjust(out["p_signflip"].to_numpy(float))
    out["significant"] = out["p_holm"] < ALPHA
    return out


def _f(x: float, digits: int = 3, sign: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "NaN"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def text_cell(x) -> str:
    """A string cell of the tests table ('' for the NaN pandas puts in empty ones)."""
    return x if isinstance(x, str) else ""


def fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "NaN"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def _boot_cell(r) -> str:
    if np.isfinite(r["boot_ci_low"]):
        return f"[{_f(r['boot_ci_low'], sign=True)}, {_f(r['boot_ci_high'], sign=True)}]"
    return f"not given ({int(r['n_units'])} < {MIN_BOOT_UNITS} units)" if r["n_units"] < MIN_BOOT_UNITS else "NaN"


def fold_stats_markdown(tests: pd.DataFrame, labels: dict[str, str] | None = None) -> str:
    """The head-to-head table: bold difference only when it survives Holm at the fold level."""
    from .stats import METRIC_LABELS, markdown_table
    labels = labels or METRIC_LABELS
    if tests.empty:
        return "_No paired comparison: the reference method is absent or is the only method._"
    rows = []
    for _, r in tests.iterrows():
        diff = _f(r["mean_diff"], sign=True)
        if bool(r["significant"]):
            diff = f"**{diff}**"
        rows.append([r["method"], labels.get(r["metric"], r["metric"]), f"{int(r['n'])} / {int(r['n_units'])}",
                     _f(r["mean_method"]), _f(r["mean_reference"]), diff, text_cell(r["unit_diffs"]),
                     f"{fmt_p(r['p_t'])} (df {int(r['t_df'])})" if np.isfinite(r["p_t"]) else "NaN",
                     fmt_p(r["p_holm"]), f"[{_f(r['t_ci_low'], sign=True)}, {_f(r['t_ci_high'], sign=True)}]",
                     _boot_cell(r),
                     fmt_p(r["p_signflip"]), fmt_p(r["p_wilcoxon_cases"]), text_cell(r["note"])])
    ref = tests["reference"].iloc[0]
    unit = tests["unit"].iloc[0]
    return markdown_table(["method", "metric", f"cases / {unit}s", "method mean", f"{ref} mean, same cases",
                           "difference", f"per-{unit} difference", f"{unit}-level t-test p", "Holm p",
                           f"95% t-CI ({unit}s)", f"95% cluster bootstrap CI (BCa, {unit}s)", "sign-flip p",
                           "per-case Wilcoxon p (secondary)", "note"], rows)


def fold_stats_explanation(tests: pd.DataFrame, n_boot: int, seed: int) -> str:
    """The paragraph above the table: what each column is, the family Holm corrects over."""
    unit = tests["unit"].iloc[0] if not tests.empty else "fold"
    m = int(np.isfinite(tests["p_t"].to_numpy(float)).sum()) if not tests.empty else 0
    return (f"Paired by case (and seed), the reference's mean given on the same cases. The unit of replication "
            f"is one training ({unit}): the test cases of a fold share one model, so their differences are not "
            f"independent. **{unit.capitalize()}-level t-test**: one-sample t over the per-{unit} mean differences "
            f"(df = units - 1), with its 95% t-interval; **Holm p**: Holm's step-down adjustment over all {m} "
            f"comparisons of this table; a difference is **bold only when its Holm p < {ALPHA}**. "
            f"**Cluster bootstrap**: BCa interval resampling whole {unit}s ({n_boot} resamples, seed {seed}), "
            f"shown from {MIN_BOOT_UNITS} units on (it undercovers at few units: the t-interval is primary). **Sign-flip p**: exact permutation test over the per-{unit} differences "
            f"(its smallest possible value is 2/2^units, e.g. 0.0625 with 5 folds). **Per-case Wilcoxon p** "
            f"treats the cases as independent and overstates the evidence; it is shown only for comparison "
            f"with earlier reports. Table: [stats.csv](stats.csv).")
