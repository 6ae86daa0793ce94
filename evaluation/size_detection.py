"""Lesion-wise detection by PVS size: which sizes of PVS a method finds, and how many of its small components
are real. The paper's case for HF deep supervision is that tiny PVS survive downsampling; this is where that
claim can be checked, and where a DSC difference that lesion F1 contradicts is explained.

Per case, both sides are binned by the component's own size in voxels (3D components and the matching rule of
`lesion_matching.py`, from the same `evaluate_case` pass, so the numbers add up to the lesion metrics):
    * true components by size: how many there are and how many the prediction detected
      -> ``lesion_recall_<bin>`` = detected / true in that bin (NaN when the case has none in it);
    * predicted components by size: how many there are and how many are matched
      -> ``lesion_precision_<bin>`` (NaN when the prediction has none in it).
Bins are voxel counts (SIZE_BINS: 1-2, 3-5, 6-15, >= 16 voxels), because downsampling acts on the voxel grid;
the report states the voxel volume so that they can be read in mm³. On the `study` phantom (0.9 x 0.9 x 2 mm)
about a third of the true PVS have 1-2 voxels, and a tenth have 16 or more.

The report pools the counts of every case of a method (detected / true over all its cases) and tests the per-case
recall of each bin against the reference with the same fold-level paired tests as the headline metrics
(fold_stats.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .lesion_matching import LesionMatch

SIZE_BINS: tuple[tuple[str, int, int | None], ...] = (("1-2vox", 1, 2), ("3-5vox", 3, 5), ("6-15vox", 6, 15),
                                                       ("16+vox", 16, None))
FIGURE_FILE = "fig_detection_by_size.png"
TABLE_FILE = "detection_by_size.csv"


def _bin_index(sizes: np.ndarray) -> np.ndarray:
    """Bin index (0..len(SIZE_BINS)-1) of each component size."""
    upper = [hi for _, _, hi in SIZE_BINS[:-1]]
    return np.searchsorted(np.asarray(upper), sizes, side="left")


def recall_metric(bin_name: str) -> str:
    return f"lesion_recall_{bin_name}"


def size_metrics(match: LesionMatch) -> dict[str, float]:
    """Per-bin counts and ratios of one case (module docstring), from the component sizes and hits that
    `match_lesions` already holds (no second pass over the volume)."""
    out: dict[str, float] = {}
    for side, sizes, hit, ratio in (("true", match.true_sizes, match.true_detected, "lesion_recall"),
                                    ("pred", match.pred_sizes, match.pred_matched, "lesion_precision")):
        idx = _bin_index(sizes[1:])
        hits = np.asarray(hit[1:], bool)
        for i, (name, _, _) in enumerate(SIZE_BINS):
            in_bin = idx == i
            total, found = int(in_bin.sum()), int((in_bin & hits).sum())
            out[f"n_{side}_{name}"] = float(total)
            out[f"n_{side}_hit_{name}"] = float(found)
            out[f"{ratio}_{name}"] = found / total if total else float("nan")
    return out


def size_table(metrics: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """method, size_bin, cases, n_true, n_detected, pooled recall, mean per-case recall, n_pred, n_matched,
    pooled precision; pooled = sums over every case of the method."""
    rows = []
    for method in methods:
        sub = metrics[metrics["method"] == method]
        val = sub.groupby("metric")["value"]
        sums, means = val.sum(), val.mean()  # mean skips NaN (cases without a component in the bin)
        for name, lo, hi in SIZE_BINS:
            if f"n_true_{name}" not in sums:
                continue
            n_true, n_det = sums[f"n_true_{name}"], sums[f"n_true_hit_{name}"]
            n_pred, n_match = sums[f"n_pred_{name}"], sums[f"n_pred_hit_{name}"]
            rows.append({"method": method, "size_bin": name, "voxels_min": lo, "voxels_max": hi,
                         "cases": int(sub["case"].nunique()), "n_true": int(n_true), "n_detected": int(n_det),
                         "recall_pooled": n_det / n_true if n_true else np.nan,
                         "recall_case_mean": float(means[recall_metric(name)]),
                         "n_pred": int(n_pred), "n_matched": int(n_match),
                         "precision_pooled": n_match / n_pred if n_pred else np.nan})
    return pd.DataFrame(rows)


def fig_detection_by_size(table: pd.DataFrame, png, methods: list[str]) -> None:
    """Grouped bars: pooled lesion recall (left) and precision (right) per size bin and method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [b[0] for b in SIZE_BINS]
    width = 0.8 / max(1, len(methods))
    for ax, col, label in zip(axes, ("recall_pooled", "precision_pooled"),
                              ("lesion recall (true PVS found)", "lesion precision (predictions matched)")):
        for k, method in enumerate(methods):
            sub = table[table["method"] == method].set_index("size_bin")
            vals = [sub[col].get(n, np.nan) for n in names]
            ax.bar(np.arange(len(names)) + (k - (len(methods) - 1) / 2) * width, vals, width, label=method)
        ax.set_xticks(np.arange(len(names)), [n.replace("vox", " vox") for n in names])
        ax.set_xlabel("component size (voxels)")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    n_rows = -(-len(methods) // 5)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(methods), 5), fontsize=8)
    fig.suptitle("Detection by PVS size (counts pooled over each method's cases)", fontsize=10, y=0.995)
    fig.tight_layout(rect=(0, 0.06 * n_rows, 1, 1))
    fig.savefig(png, dpi=110)
    plt.close(fig)


def size_markdown(table: pd.DataFrame, tests: pd.DataFrame, reference: str, voxel_mm3: float | None) -> list[str]:
    """The report section: pooled recall / precision per bin and the paired per-case recall tests."""
    from .fold_stats import fmt_p, text_cell
    from .stats import markdown_table
    L = ["## Detection by PVS size", ""]
    if table.empty:
        return L + ["No size-binned detection in these metrics.", ""]
    vox = f" (one voxel = {voxel_mm3:.2f} mm³)" if voxel_mm3 else ""
    L += [f"True and predicted 3D components binned by their own size in voxels{vox}, matched with the lesion rule "
          "above; recall = true PVS of that size found, precision = predicted components of that size that match a "
          f"true PVS; counts pooled over each method's cases. Table: [{TABLE_FILE}]({TABLE_FILE}).", ""]
    rows = [[r.method, r.size_bin.replace("vox", " vox"), f"{r.n_detected} / {r.n_true}", f"{r.recall_pooled:.3f}",
             f"{r.n_matched} / {r.n_pred}", "NaN" if not np.isfinite(r.precision_pooled) else f"{r.precision_pooled:.3f}"]
            for r in table.itertuples()]
    L += [markdown_table(["method", "size", "detected / true", "recall", "matched / predicted", "precision"], rows), ""]
    if not tests.empty:
        unit = tests["unit"].iloc[0]
        L += [f"Per-case recall by size, paired by case against {reference} on the same cases and tested at the "
              f"{unit} level like the table above (t-test over the per-{unit} mean differences, Holm over the rows "
              f"of this table; bold only when the Holm p < 0.05; per-case Wilcoxon p secondary):", ""]
        # the note says why a p is missing (e.g. every paired difference zero) or cannot reach 0.05 (few units)
        rows = [[r.method, r.metric.replace("lesion_recall_", "").replace("vox", " vox"), f"{int(r.n)} / {int(r.n_units)}",
                 f"{r.mean_reference:.3f}",
                 (f"**{r.mean_diff:+.3f}**" if bool(r.significant) else f"{r.mean_diff:+.3f}"),
                 text_cell(r.unit_diffs), f"[{r.t_ci_low:+.3f}, {r.t_ci_high:+.3f}]" if np.isfinite(r.t_ci_low) else "NaN",
                 fmt_p(r.p_t), fmt_p(r.p_holm), fmt_p(r.p_wilcoxon_cases), text_cell(r.note)]
                for r in tests.itertuples()]
        L += [markdown_table(["method", "size", f"cases / {unit}s", f"{reference} recall, same cases",
                              f"recall difference vs {reference}", f"per-{unit} difference", f"95% t-CI ({unit}s)",
                              f"{unit}-level p", "Holm p", "per-case Wilcoxon p", "note"], rows), ""]
    L += [f"![Detection by size]({FIGURE_FILE})", ""]
    return L
