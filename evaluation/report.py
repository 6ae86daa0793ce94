"""The evaluation report: metrics, tables, statistics, counts, figures and `report.md` in one folder.

`build_report` is what `mfns-report` runs; `write_metric_tables` and `write_count_tables` are the parts
that `mfns-evaluate` and `mfns-counts` run on their own. Files written into out_dir:
    metrics.csv (tidy: case, method, fold, metric, value), summary.csv / summary.md (mean +/- SD per
    method), stats.csv (fold-level tests with Holm, cluster bootstrap, per-case Wilcoxon vs the reference;
    fold_stats.py), counts.csv (rating-slice counts, tidy),
    correlations.csv (Spearman, Bland-Altman), fig3_metrics_boxplot.png, fig4_overlays.png,
    fig5_burden_mip.png, fig6_counts_scatter.png, fig_bland_altman.png, fig7_failure_cases.png,
    detection_by_size.csv + fig_detection_by_size.png (size_detection.py), report.md.
Case choices for the pictures (documented in report.md too): Fig. 4 shows the case with the median DSC of
the reference method (first method if the reference is absent) on its BG and CSO rating slices (the slice
with most truth voxels when no rating slice is known); Fig. 5 shows the subjects with the highest, median
and lowest truth PVS volume; Fig. 7 each method's worst cases (failure_cases.py). The text of report.md is
report_text.py.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures
from .budget import read_budgets
from .counts import count_correlations, count_folders, COUNT_COLUMNS
from .counts import count_agreement_markdown
from .confounder_fp import FILES as CONFOUNDER_FILES, confounder_fp_table, write_confounder_fp
from .io import (FILE_ENDING, case_to_fold_from_splits, check_fold_membership, check_out_dir, load_splits_file,
                 load_subjects, prediction_files, prepare_out_dir, read_binary_mask, read_image)
from .failure_cases import FIGURE_FILE as FAILURE_FIGURE
from .failure_cases import failure_panels, fig_failure_cases, pick_failure_cases
from .lesion_matching import DEFAULT_LESION_RULE, DEFAULT_MIN_IOU
from .metrics import check_folders, evaluate_folders
from .seed_runs import evaluate_by_seed, first_seed, split_by_seed
from .report_text import report_markdown
from .size_detection import FIGURE_FILE as SIZE_FIGURE
from .size_detection import SIZE_BINS, TABLE_FILE as SIZE_TABLE
from .size_detection import fig_detection_by_size, recall_metric, size_markdown, size_table
from .fold_stats import fold_level_tests, fold_stats_explanation, fold_stats_markdown
from .stats import method_order, summary_markdown, summary_table

logger = logging.getLogger(__name__)

METRIC_FILES = ["metrics.csv", "summary.csv", "summary.md", "stats.csv"]
COUNT_FILES = ["counts.csv", "correlations.csv"]
FIGURE_FILES = ["fig3_metrics_boxplot.png", "fig4_overlays.png", "fig5_burden_mip.png", "fig6_counts_scatter.png",
                "fig_bland_altman.png", "fig7_failure_cases.png", SIZE_FIGURE]
REPORT_FILES = METRIC_FILES + [SIZE_TABLE] + COUNT_FILES + FIGURE_FILES + CONFOUNDER_FILES + ["report.md"]


def write_size_detection(out_dir: Path, metrics: pd.DataFrame, methods: list[str], reference: str,
                         n_boot: int = 10000, seed: int = 0) -> list[str]:
    """detection_by_size.csv and its figure; returns the report section (size_detection.py)."""
    table = size_table(metrics, methods)
    table.to_csv(Path(out_dir) / SIZE_TABLE, index=False, float_format="%.10g")
    fig_detection_by_size(table, Path(out_dir) / SIZE_FIGURE, methods)
    tests = fold_level_tests(metrics, reference, metric_names=tuple(recall_metric(b[0]) for b in SIZE_BINS),
                             n_boot=n_boot, seed=seed, methods=methods)
    wide = metrics[metrics["metric"].isin(["vol_true_mm3", "tp_voxels", "fn_voxels"])].pivot_table(
        index=["case", "method"], columns="metric", values="value")
    wide = wide[(wide["tp_voxels"] + wide["fn_voxels"]) > 0]
    voxel_mm3 = float((wide["vol_true_mm3"] / (wide["tp_voxels"] + wide["fn_voxels"])).median()) if len(wide) else None
    return size_markdown(table, tests, reference, voxel_mm3)


def write_metric_tables(out_dir: Path, metrics: pd.DataFrame, reference: str = "MfNS_De", n_boot: int = 10000,
                        seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Writes metrics.csv, summary.csv, summary.md and stats.csv; returns (summary, tests)."""
    out_dir = Path(out_dir)
    metrics.to_csv(out_dir / "metrics.csv", index=False, float_format="%.10g")
    summary = summary_table(metrics, reference)
    summary.to_csv(out_dir / "summary.csv", index=False, float_format="%.10g")
    tests = fold_level_tests(metrics, reference, n_boot=n_boot, seed=seed)
    tests.to_csv(out_dir / "stats.csv", index=False, float_format="%.10g")
    n_cases = metrics["case"].nunique()
    rule = metrics.attrs.get("lesion_rule") or {}
    rule_text = (f"Lesion-wise metrics: 3D components ({rule.get('connectivity')}-connectivity), rule "
                 f"`{rule.get('lesion_rule')}`" + (f" (one-to-one matching on IoU >= {rule.get('min_iou'):g})"
                                                   if rule.get("lesion_rule") == "one_to_one" else
                                                   " (old touch rule: merges and splits count as hits)")
                 + ".\n\n") if rule else ""
    (out_dir / "summary.md").write_text(
        f"# Segmentation metrics (mean ± SD over cases)\n\n{summary_markdown(summary)}\n\n"
        f"n = {n_cases} cases with at least one prediction; undefined ratios (empty truth or prediction) are skipped, "
        f"see `n` in summary.csv per metric. {rule_text}"
        f"# Paired comparison with {reference} at the level of independent trainings\n\n"
        f"{fold_stats_explanation(tests, n_boot, seed)}\n\n{fold_stats_markdown(tests)}\n")
    return summary, tests


def write_count_tables(out_dir: Path, counts: pd.DataFrame) -> pd.DataFrame:
    """Writes counts.csv and correlations.csv; returns the correlations."""
    corr = count_correlations(counts)
    counts.to_csv(Path(out_dir) / "counts.csv", index=False, float_format="%.10g")
    corr.to_csv(Path(out_dir) / "correlations.csv", index=False, float_format="%.10g")
    return corr


def _image_path(dataset_dir: Path, case: str) -> Path | None:
    for sub in ("imagesTr", "imagesTs"):
        p = Path(dataset_dir) / sub / f"{case}_0000{FILE_ENDING}"
        if p.is_file():
            return p
    return None


def _load_case(case: str, gt_dir: Path, pred_files: dict[str, dict[str, Path]], dataset_dir: Path):
    gt, geom = read_binary_mask(Path(gt_dir) / (case + FILE_ENDING), role="label")
    preds = {m: read_binary_mask(files[case])[0] for m, files in pred_files.items() if case in files}
    ip = _image_path(dataset_dir, case)
    img = read_image(ip, role="T2w image")[0].astype(np.float32) if ip is not None else None
    if img is not None and img.shape != gt.shape:
        img = None  # a multi-channel or foreign image is no use as a backdrop; the overlay works without it
    return gt, preds, img, geom


def _pick_overlay_case(metrics: pd.DataFrame, reference: str) -> str | None:
    ref = reference if reference in set(metrics["method"]) else method_order(metrics)[0]
    d = metrics[(metrics["method"] == ref) & (metrics["metric"] == "dsc")].dropna(subset=["value"])
    if d.empty:
        return None
    d = d.sort_values(["value", "case"]).reset_index(drop=True)
    return str(d.loc[(len(d) - 1) // 2, "case"])


def _burden_cases(metrics: pd.DataFrame) -> list[tuple[str, str]]:
    v = metrics[metrics["metric"] == "vol_true_mm3"].drop_duplicates("case").sort_values(["value", "case"])
    cases = list(v["case"])
    if not cases:
        return []
    picks = [("high burden", cases[-1]), ("medium burden", cases[(len(cases) - 1) // 2]), ("low burden", cases[0])]
    seen, out = set(), []
    for label, c in picks:
        if c not in seen:
            seen.add(c)
            out.append((label, c))
    return out


def build_report(out_dir: Path, gt_dir: Path, pred_dirs: dict[str, Path | list[Path]], subjects_json: Path | None,
                 splits_json: Path | None = None, reference_method: str = "MfNS_De", provenance: dict | None = None,
                 *, overwrite: bool = False, allow_missing: bool = False, compute_hd95: bool = False,
                 connectivity: int = 26, count_connectivity: int = 8, min_size: int = 1, n_boot: int = 10000,
                 seed: int = 0, num_workers: int = 1, dataset_dir: Path | None = None,
                 lesion_rule: str = DEFAULT_LESION_RULE, min_iou: float = DEFAULT_MIN_IOU,
                 auto_slices: bool = False) -> Path:
    """Evaluates every prediction folder and writes the full report into out_dir; returns report.md's path.

    subjects_json gives the rating slices, region masks and rater counts (counts are skipped with a note
    when it is None); its folder is the dataset folder (for region masks and the T2w backdrop of the
    figures) unless dataset_dir is given. splits_json (mfns_splits.json) assigns each case to the fold that
    tested it and is checked against prediction folders named `fold_k` (each of their cases must be in fold k's
    test group, else MfnsInputError naming the case and folder). provenance: free-form {name: value} shown in the report (commands, seeds, versions).
    auto_slices: subjects without rating slices are counted on automatic ones (see counts.count_folders).
    """
    gt_dir = Path(gt_dir)
    subjects = load_subjects(subjects_json) if subjects_json is not None else None
    splits = load_splits_file(splits_json) if splits_json is not None else None
    case_to_fold = None
    if splits is not None:
        case_to_fold = case_to_fold_from_splits(splits, str(splits_json))
        check_fold_membership(pred_dirs, splits, str(splits_json))
    if dataset_dir is None:
        dataset_dir = Path(subjects_json).parent if subjects_json is not None else gt_dir.parent
    seed_groups = split_by_seed(pred_dirs)  # mfns-compare --seeds: one set of folders per training seed
    for group in seed_groups.values():
        check_folders(gt_dir, group, allow_missing)
    check_out_dir(out_dir, overwrite, REPORT_FILES)
    budgets, budget_known = read_budgets(provenance, list(pred_dirs))  # checks provenance["training"] early

    # metrics and counts read every input file; out_dir is created only after they succeeded
    metrics = evaluate_by_seed(seed_groups, lambda group: evaluate_folders(
        gt_dir, group, case_to_fold, allow_missing=allow_missing, compute_hd95=compute_hd95,
        connectivity=connectivity, num_workers=num_workers, lesion_rule=lesion_rule, min_iou=min_iou))
    picture_dirs = first_seed(seed_groups)  # counts and pictures: the first seed's predictions
    if subjects is not None:
        counts = count_folders(subjects, dataset_dir, picture_dirs, gt_dir, count_connectivity, min_size,
                               allow_missing=allow_missing, cases=sorted(set(metrics["case"])), auto_slices=auto_slices)
    else:
        counts = pd.DataFrame(columns=COUNT_COLUMNS)
    # the figures read the cases' T2w scans (backdrops) after out_dir exists: check them all now, so that a bad
    # scan (truncated, NaN, constant) is refused before anything is written
    for case in sorted(set(metrics["case"])):
        ip = _image_path(dataset_dir, case)
        if ip is not None:
            read_image(ip, role="T2w image")
    # issue 23: the phantom's confounder maps are read and checked before anything is written
    fp_table = confounder_fp_table(gt_dir, prediction_files(picture_dirs), subjects, dataset_dir,
                                   sorted(set(metrics["case"])))
    out_dir = prepare_out_dir(out_dir, overwrite, REPORT_FILES)
    missing = metrics.attrs.get("missing", {})
    pred_files = prediction_files(picture_dirs)
    methods = method_order(metrics, reference_method)
    summary, tests = write_metric_tables(out_dir, metrics, reference_method, n_boot, seed)
    size_section = write_size_detection(out_dir, metrics, methods, reference_method, n_boot, seed)
    corr = write_count_tables(out_dir, counts)
    # issue 23: ICC/relative count error and false positives by confounder type (phantom maps), appended to report.md
    extra_sections = count_agreement_markdown(corr, subjects) + write_confounder_fp(out_dir, fp_table, methods)

    figures.fig_metrics_boxplot(metrics, out_dir / "fig3_metrics_boxplot.png", methods, seed=seed)
    overlay_case = _pick_overlay_case(metrics, reference_method)
    panels, aspect = [], 1.0
    if overlay_case is not None:
        gt, preds, img, geom = _load_case(overlay_case, gt_dir, pred_files, dataset_dir)
        aspect = geom.spacing_zyx[1] / geom.spacing_zyx[2]
        rs = ((subjects or {}).get("subjects", {}).get(overlay_case) or {}).get("rating_slices") or {}
        slices = [(f"{overlay_case}, {r} rating slice {i}", i) for r, i in rs.items()
                  if isinstance(i, int) and 0 <= i < gt.shape[0]]
        if not slices:
            z = int(np.argmax(gt.sum(axis=(1, 2))))
            slices = [(f"{overlay_case}, slice {z} (most PVS voxels)", z)]
        window = tuple(np.percentile(img, [1, 99.5])) if img is not None else None
        for title, z in slices:
            panels.append({"title": title, "image": None if img is None else img[z], "gt": gt[z],
                           "preds": {m: p[z] for m, p in preds.items()}, "window": window})
    figures.fig_overlays(panels, methods, out_dir / "fig4_overlays.png", aspect=aspect)
    rows = []
    for label, case in _burden_cases(metrics):
        gt, preds, img, geom = _load_case(case, gt_dir, pred_files, dataset_dir)
        aspect = geom.spacing_zyx[1] / geom.spacing_zyx[2]
        vol = float(metrics.loc[(metrics["case"] == case) & (metrics["metric"] == "vol_true_mm3"), "value"].iloc[0])
        rows.append({"title": f"{label}\n{case} ({vol:.0f} mm³)", "image": img, "gt": gt, "preds": preds})
    figures.fig_burden_mip(rows, methods, out_dir / "fig5_burden_mip.png", aspect=aspect)
    figures.fig_counts_scatter(counts, corr, out_dir / "fig6_counts_scatter.png", methods)
    figures.fig_bland_altman(counts, corr, out_dir / "fig_bland_altman.png", methods)
    fail_panels, aspect = failure_panels(pick_failure_cases(metrics, methods),
                                         lambda case: _load_case(case, gt_dir, pred_files, dataset_dir))
    fig_failure_cases(fail_panels, out_dir / FAILURE_FIGURE, aspect=aspect)

    budgets = sorted(budgets, key=lambda b: methods.index(b.method) if b.method in methods else len(methods))
    report = out_dir / "report.md"
    report.write_text(report_markdown(
        budgets=budgets, budget_known=budget_known, failure_panels=fail_panels, gt_dir=gt_dir, pred_dirs=pred_dirs, subjects_json=subjects_json, subjects=subjects, splits_json=splits_json,
        splits=splits, reference=reference_method, provenance=provenance or {}, metrics=metrics, summary=summary,
        tests=tests, size_section=size_section, counts=counts, corr=corr, missing=missing, overlay_case=overlay_case,
        burden=_burden_cases(metrics), settings={"connectivity (3D lesions)": connectivity,
                                                  "lesion rule": lesion_rule, "lesion min IoU": min_iou,
                                                  "connectivity (2D counts)": count_connectivity,
                                                  "min_size (2D counts, pixels)": min_size, "HD95": compute_hd95,
                                                  "bootstrap resamples": n_boot, "bootstrap seed": seed,
                                                  "reference method": reference_method}))
    if extra_sections:
        with open(report, "a") as f:
            f.write("\n" + "\n".join(extra_sections) + "\n")
    return report
