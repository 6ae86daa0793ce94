"""The text of report.md (build_report in report.py computes everything and passes it here).

Order of the sections: the training-budget warning and budget (first lines, issue 10), data, folds,
settings and seeds, provenance, metrics (Table 2, Fig. 3), paired comparison, detection by PVS size, overlays (Fig. 4), whole-brain
burden (Fig. 5), worst cases (Fig. 7), rating-slice counts (Fig. 6, Bland-Altman).
"""
from __future__ import annotations

import datetime as _dt
import json
import math

import numpy as np

from .budget import budget_markdown, warning_line
from .failure_cases import failure_markdown
from .fold_stats import fold_stats_explanation, fold_stats_markdown
from .stats import markdown_table, summary_markdown


def _lesion_rule_sentence(settings: dict) -> str:
    if settings["lesion rule"] == "any_overlap":
        return ("**any-overlap rule (not the default; can be gamed, e.g. an all-ones prediction scores lesion F1 = 1)**: "
                "a true component is detected if any of its voxels is predicted, a predicted component is a true "
                "positive if any of its voxels is true.")
    return ("one-to-one rule: true and predicted components are paired by a maximum-weight bipartite matching on "
            f"their IoU, and a pair counts only when IoU >= {settings['lesion min IoU']:g}, so a blob covering several "
            "PVS finds at most one and the extra pieces of a split PVS are false positives (VALDO-style detection F1; "
            "`evaluation/lesion_matching.py`).")


def _fmt(x, digits=3):
    return "NaN" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def report_markdown(*, budgets, budget_known, failure_panels, gt_dir, pred_dirs, subjects_json, subjects, splits_json, splits, reference, provenance,
                     metrics, summary, tests, size_section, counts, corr, missing, overlay_case, burden, settings) -> str:
    n_cases = metrics["case"].nunique()
    L = ["# PVS segmentation evaluation report", ""]
    warn = warning_line(budgets, budget_known)
    if warn:
        L += [warn, ""]
    L += [f"Generated {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by nnunetv2_mfns.evaluation.", ""]
    L += budget_markdown(budgets, budget_known)
    L += ["## Data", "",
          f"- labels: `{gt_dir}` ({n_cases} evaluated cases)"]
    if subjects is not None:
        cb = subjects.get("created_by") or {}
        L.append(f"- subjects: `{subjects_json}` (dataset {subjects.get('dataset_name')}, {len(subjects['subjects'])} "
                 f"subjects, created by {cb.get('tool')} {cb.get('version', '')}, seed {cb.get('seed')})")
    else:
        L.append("- subjects: none given, so no rating-slice counts")
    L.append("- methods (prediction folders):")
    for m, d in pred_dirs.items():
        n = metrics.loc[metrics["method"] == m, "case"].nunique()
        d = ", ".join(f"`{x}`" for x in d) if isinstance(d, (list, tuple)) else f"`{d}`"
        L.append(f"  - **{m}**: {d} ({n} cases" + (f"; missing: {', '.join(missing[m])}" if missing.get(m) else "") + ")")
    L += ["", "## Folds", ""]
    if splits is not None:
        L.append(f"From `{splits_json}` (seed {splits.get('seed')}, {splits.get('n_groups', len(splits['folds']))} groups). "
                 "Each case is evaluated on the fold that tested it.")
        L.append("")
        rows = [[str(f["fold"]), str(f.get("test_group", "")), str(f.get("val_group", "")), str(len(f.get("train", []))),
                 str(len(f.get("val", []))), ", ".join(f.get("test", []))] for f in splits["folds"]]
        L.append(markdown_table(["fold", "test group", "val group", "n train", "n val", "test cases"], rows))
        gs = splits.get("group_stats")
        if gs:
            L += ["", markdown_table(["group", "n", "age mean", "age SD", "F", "M"],
                                     [[str(g.get("group")), str(g.get("n")), _fmt(g.get("age_mean"), 1),
                                       _fmt(g.get("age_sd"), 1), str(g.get("n_F")), str(g.get("n_M"))] for g in gs])]
    else:
        L.append("No splits file given: the `fold` column is empty.")
    L += ["", "## Settings and seeds", ""]
    L += [f"- {k}: {v}" for k, v in settings.items()]
    if splits is not None:
        L.append(f"- splits seed: {splits.get('seed')}")
    if subjects is not None:
        L.append(f"- dataset seed (subjects.json created_by): {(subjects.get('created_by') or {}).get('seed')}")
    L += ["", "## Commands and provenance", ""]
    if provenance:
        for k, v in provenance.items():
            if k == "training" and isinstance(v, dict):
                continue  # shown in the Training budget section
            if isinstance(v, (list, tuple)):
                L.append(f"- {k}:")
                L += [f"  - `{x}`" for x in v]
            elif isinstance(v, dict):
                L.append(f"- {k}: `{json.dumps(v, sort_keys=True, default=str)}`")
            else:
                L.append(f"- {k}: `{v}`")
    else:
        L.append("No provenance given.")
    L += ["", "## Segmentation metrics", "",
          "Per-case values: [metrics.csv](metrics.csv) (tidy: case, method, fold, metric, value); "
          "summary: [summary.csv](summary.csv), [summary.md](summary.md).", "",
          summary_markdown(summary), "",
          "DSC = 2TP/(2TP+FP+FN), SEN = TP/(TP+FN), PPV = TP/(TP+FP) over all voxels of a case. Lesion-wise: 3D "
          f"components ({settings['connectivity (3D lesions)']}-connectivity); " + _lesion_rule_sentence(settings) + " Empty masks: "
          "DSC = 1 and lesion F1 = 1 when both are empty; SEN (and lesion recall) NaN when the truth is empty, PPV (and "
          "lesion precision) NaN when the prediction is empty; NaN values are left out of the means (`n` per metric in "
          "summary.csv).", "",
          "![Fig. 3](fig3_metrics_boxplot.png)", "",
          f"## Paired comparison with {reference}", "",
          fold_stats_explanation(tests, settings['bootstrap resamples'], settings['bootstrap seed']), "",
          fold_stats_markdown(tests), ""]
    L += size_section
    L += ["## Overlays", "",
          (f"Case {overlay_case} (median DSC of the reference method), on its rating slices: green = TP, "
           "red = FP, blue = FN." if overlay_case else "No case available."), "", "![Fig. 4](fig4_overlays.png)", "",
          "## Whole-brain PVS burden", "",
          "Axial maximum-intensity projections for the subjects with the highest, median and lowest truth volume: "
          + ", ".join(f"{c} ({lab})" for lab, c in burden) + ".", "", "![Fig. 5](fig5_burden_mip.png)", ""]
    L += failure_markdown(failure_panels)
    L += ["## Rating-slice counts", ""]
    if counts.empty:
        L.append("No counts: no subjects file, or no subject with rating slices.")
    else:
        tot = counts[counts["side"] == "total"]
        L.append(f"PVS counted as 2D connected components ({settings['connectivity (2D counts)']}-connectivity, "
                 f"min size {settings['min_size (2D counts, pixels)']} px) of each mask inside the region mask on the BG "
                 f"and CSO rating slices; {tot['case'].nunique()} subjects. Per-hemisphere counts in "
                 "[counts.csv](counts.csv); agreement in [correlations.csv](correlations.csv). Bias = mean(x - y).")
        L.append("")
        rows = []
        for _, r in corr.iterrows():
            p = r["spearman_p"]
            rows.append([r["region"], r["x"], r["y"], str(int(r["n"])), _fmt(r["spearman_rs"]),
                         "NaN" if not np.isfinite(p) else ("<0.001" if p < 1e-3 else f"{p:.3f}"),
                         _fmt(r["bias"], 2), f"[{_fmt(r['loa_low'], 1)}, {_fmt(r['loa_high'], 1)}]", r["note"] or ""])
        L.append(markdown_table(["region", "x", "y", "n", "Spearman rs", "p", "bias (x - y)", "95% LoA", "note"], rows))
    L += ["", "![Fig. 6](fig6_counts_scatter.png)", "", "![Bland-Altman](fig_bland_altman.png)", ""]
    return "\n".join(L)
