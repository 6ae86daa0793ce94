"""Figures like the paper's 3-6 and Bland-Altman plots (matplotlib, Agg backend, PNG).

Every function takes already computed tables/arrays and writes one PNG; choosing cases and slices is the
report's job (report.py). When the data for a figure do not exist (e.g. no rater counts), the figure is
still written and says so in its panel, so a report never links a missing file.
Colours: TP green, FP red, FN blue in overlays; one colour per method and one marker per rater in plots.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .stats import METRIC_LABELS  # noqa: E402

DPI = 100
TP_RGB, FP_RGB, FN_RGB = (0.10, 0.85, 0.20), (1.0, 0.15, 0.15), (0.15, 0.55, 1.0)
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def method_colors(methods: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _save(fig, out_png: Path) -> Path:
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return out_png


def no_data_figure(out_png: Path, title: str, message: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.set_axis_off()
    ax.set_title(title, fontsize=12)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, wrap=True, transform=ax.transAxes)
    return _save(fig, out_png)


def fig_metrics_boxplot(metrics: pd.DataFrame, out_png: Path, methods: list[str],
                        metric_names: tuple[str, ...] = ("dsc", "sen", "ppv"), seed: int = 0) -> Path:
    """Fig. 3: per-method box plots of DSC, SEN, PPV with every case as a jittered dot (seeded jitter)."""
    rng = np.random.default_rng(seed)
    colors = method_colors(methods)
    fig, axes = plt.subplots(1, len(metric_names), figsize=(max(3.2 * len(metric_names), 1.3 * len(methods) * len(metric_names)), 4.2),
                             squeeze=False)
    for ax, metric in zip(axes[0], metric_names):
        data = [metrics.loc[(metrics["method"] == m) & (metrics["metric"] == metric), "value"].dropna().to_numpy()
                for m in methods]
        pos = np.arange(1, len(methods) + 1)
        nonempty = [i for i, d in enumerate(data) if d.size]
        if nonempty:
            bp = ax.boxplot([data[i] for i in nonempty], positions=pos[nonempty], widths=0.55, patch_artist=True,
                            showfliers=False, medianprops={"color": "black", "linewidth": 1.5})
            for patch, i in zip(bp["boxes"], nonempty):
                patch.set_facecolor(colors[methods[i]])
                patch.set_alpha(0.45)
        for i, d in enumerate(data):
            ax.scatter(pos[i] + rng.uniform(-0.12, 0.12, d.size), d, s=14, color=colors[methods[i]],
                       edgecolor="black", linewidth=0.4, zorder=3)
            if d.size:
                ax.plot(pos[i], d.mean(), marker="D", color="white", markeredgecolor="black", markersize=6, zorder=4)
        ax.set_xticks(pos, methods, rotation=30 if len(methods) > 2 else 0, ha="right" if len(methods) > 2 else "center")
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=12)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("per-case value")
    n_cases = metrics["case"].nunique()
    fig.suptitle(f"Voxel metrics per method (n = {n_cases} cases; box = IQR, line = median, diamond = mean)", fontsize=11)
    fig.tight_layout()
    return _save(fig, out_png)


def _crop_box(*arrays2d: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    union = np.zeros(arrays2d[0].shape, bool)
    for a in arrays2d:
        if a is not None:
            union |= a > 0
    if not union.any():
        return slice(None), slice(None)
    ys, xs = np.nonzero(union.any(1))[0], np.nonzero(union.any(0))[0]
    return (slice(max(ys.min() - margin, 0), ys.max() + margin + 1), slice(max(xs.min() - margin, 0), xs.max() + margin + 1))


def _gray(img2d: np.ndarray | None, shape: tuple[int, int], window: tuple[float, float] | None = None) -> np.ndarray:
    """RGB grey image; window (lo, hi) should come from the whole volume, so that slices without bright CSF
    are not stretched to white (a per-slice window is only the fallback)."""
    if img2d is None:
        return np.zeros(shape + (3,))
    lo, hi = window if window is not None else np.percentile(img2d, [1, 99.5])
    g = np.clip((img2d - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat(g[..., None], 3, axis=2)


def overlay_rgb(img2d: np.ndarray | None, gt2d: np.ndarray, pred2d: np.ndarray | None,
                window: tuple[float, float] | None = None) -> np.ndarray:
    """Grey image with TP/FP/FN (or truth only when pred2d is None) painted in opaque colours."""
    rgb = _gray(img2d, gt2d.shape, window)
    gt2d = gt2d.astype(bool)
    if pred2d is None:
        rgb[gt2d] = TP_RGB
        return rgb
    pred2d = pred2d.astype(bool)
    rgb[gt2d & pred2d] = TP_RGB
    rgb[~gt2d & pred2d] = FP_RGB
    rgb[gt2d & ~pred2d] = FN_RGB
    return rgb


def fig_overlays(panels: list[dict], methods: list[str], out_png: Path, aspect: float = 1.0) -> Path:
    """Fig. 4: one row per panel dict {title, image (2D or None), gt (2D), preds {method: 2D}, optional window
    (lo, hi) grey levels}; columns are the image, the truth and each method with TP/FP/FN coloured;
    per-panel counts in the titles."""
    if not panels:
        return no_data_figure(out_png, "Overlays", "no case to show")
    ncol = 2 + len(methods)
    fig, axes = plt.subplots(len(panels), ncol, figsize=(2.9 * ncol, 3.1 * len(panels) + 0.6), squeeze=False)
    for r, p in enumerate(panels):
        img, gt, win = p.get("image"), p["gt"].astype(bool), p.get("window")
        box = _crop_box(img if img is not None else gt, *(p["preds"].values()))
        cols = [("T2w" if img is not None else "(no image)", _gray(img, gt.shape, win))]
        cols.append((f"truth ({int(gt.sum())} px)", overlay_rgb(img, gt, None, win)))
        for m in methods:
            pr = p["preds"].get(m)
            if pr is None:
                cols.append((f"{m}\n(missing)", _gray(img, gt.shape, win)))
                continue
            pr = pr.astype(bool)
            tp, fp, fn = int((gt & pr).sum()), int((~gt & pr).sum()), int((gt & ~pr).sum())
            d = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
            cols.append((f"{m}\nTP {tp} FP {fp} FN {fn} (slice DSC {d:.2f})", overlay_rgb(img, gt, pr, win)))
        for c, (title, rgb) in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(rgb[box], interpolation="nearest", aspect=aspect, origin="upper")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(p["title"], fontsize=10)
    handles = [Patch(color=TP_RGB, label="TP (both)"), Patch(color=FP_RGB, label="FP (prediction only)"),
               Patch(color=FN_RGB, label="FN (missed)")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=10, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, out_png)


def fig_burden_mip(rows: list[dict], methods: list[str], out_png: Path, aspect: float = 1.0) -> Path:
    """Fig. 5: axial maximum-intensity projections of whole-brain PVS masks for high/medium/low burden.

    rows: [{title, image (3D or None), gt (3D), preds {method: 3D}}]; the MIP is taken along numpy axis 0
    (the slice axis), drawn in colour over the mean projection of the image."""
    if not rows:
        return no_data_figure(out_png, "PVS burden", "no case to show")
    ncol = 1 + len(methods)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.8 * ncol, 3.0 * len(rows) + 0.4), squeeze=False)
    cmap = ListedColormap([(0, 0, 0, 0), (1.0, 0.85, 0.1, 1.0)])
    for r, row in enumerate(rows):
        img = row.get("image")
        bg = img.mean(axis=0) if img is not None else None
        gt = row["gt"].astype(bool)
        masks = [("truth", gt)] + [(m, row["preds"].get(m)) for m in methods]
        box = _crop_box(bg if bg is not None else gt.max(0), *(m.max(0) for _, m in masks if m is not None))
        for c, (name, mask) in enumerate(masks):
            ax = axes[r][c]
            ax.imshow(_gray(bg, gt.shape[1:])[box] * 0.6, interpolation="nearest", aspect=aspect)
            if mask is not None:
                mip = mask.astype(bool).max(axis=0)
                ax.imshow(mip[box].astype(int), cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect=aspect)
                ax.set_title(f"{name}\n{int(mask.sum())} vox" + (f", {row['n_comp'][name]} comp." if 'n_comp' in row else ""),
                             fontsize=9)
            else:
                ax.set_title(f"{name}\n(missing)", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(row["title"], fontsize=10)
    fig.suptitle("Axial maximum-intensity projection of the PVS masks (yellow) over the mean T2w projection", fontsize=11)
    fig.tight_layout()
    return _save(fig, out_png)


def fig_counts_scatter(counts: pd.DataFrame, corr: pd.DataFrame, out_png: Path, methods: list[str],
                       regions: tuple[str, ...] = ("BG", "CSO")) -> Path:
    """Fig. 6: model count (y) vs rater count (x) on each rating slice, Spearman rs in the legend."""
    tot = counts[counts["side"] == "total"]
    raters = sorted(tot.loc[tot["kind"] == "rater", "source"].unique())
    regions = tuple(r for r in regions if r in set(tot["region"])) or tuple(sorted(tot["region"].unique()))
    if tot.empty or not raters or not methods or not regions:
        return no_data_figure(out_png, "Model vs rater counts", "no rater counts and model counts on rating slices")
    colors = method_colors(methods)
    fig, axes = plt.subplots(1, len(regions), figsize=(5.6 * len(regions), 5.0), squeeze=False)
    for ax, region in zip(axes[0], regions):
        wide = tot[tot["region"] == region].pivot_table(index="case", columns="source", values="count", aggfunc="first")
        hi = 1.0
        for m in methods:
            for k, r in enumerate(raters):
                if m not in wide or r not in wide:
                    continue
                pair = wide[[r, m]].dropna()
                row = corr[(corr["region"] == region) & (corr["x"] == m) & (corr["y"] == r)]
                rs = row["spearman_rs"].iloc[0] if len(row) else np.nan
                p = row["spearman_p"].iloc[0] if len(row) else np.nan
                ptxt = "" if not np.isfinite(p) else (", p<0.001" if p < 1e-3 else f", p={p:.3f}")
                ax.scatter(pair[r], pair[m], color=colors[m], marker=MARKERS[k % len(MARKERS)], s=36, alpha=0.8,
                           edgecolor="black", linewidth=0.4,
                           label=f"{m} vs {r}: rs={rs:.2f}{ptxt}" if np.isfinite(rs) else f"{m} vs {r}: rs n/a")
                if len(pair):
                    hi = max(hi, float(pair.to_numpy().max()))
        ax.plot([0, hi * 1.05], [0, hi * 1.05], color="gray", linestyle="--", linewidth=1, label="identity")
        ax.set_xlim(0, hi * 1.08)
        ax.set_ylim(0, hi * 1.08)
        ax.set_aspect("equal")
        ax.set_xlabel("rater count")
        ax.set_ylabel("model count")
        ax.set_title(f"{region} rating slice (n = {wide.shape[0]} subjects)", fontsize=12)
        ax.grid(alpha=0.3)
        # below the axes: inside, it hides the points that matter most (high counts)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1 if len(raters) * len(methods) < 4 else 2)
    fig.tight_layout()
    return _save(fig, out_png)


def fig_bland_altman(counts: pd.DataFrame, corr: pd.DataFrame, out_png: Path, methods: list[str],
                     regions: tuple[str, ...] = ("BG", "CSO")) -> Path:
    """Bland-Altman of model minus rater counts: one panel per region x method, one colour per rater,
    solid line = bias, dashed = bias +/- 1.96 SD (values from the correlations table)."""
    tot = counts[counts["side"] == "total"]
    raters = sorted(tot.loc[tot["kind"] == "rater", "source"].unique())
    regions = tuple(r for r in regions if r in set(tot["region"])) or tuple(sorted(tot["region"].unique()))
    if tot.empty or not raters or not methods or not regions:
        return no_data_figure(out_png, "Bland-Altman", "no rater counts and model counts on rating slices")
    rcolors = {r: plt.get_cmap("Dark2")(i % 8) for i, r in enumerate(raters)}
    # shared y per region so that the methods' spreads compare at a glance
    fig, axes = plt.subplots(len(regions), len(methods), figsize=(4.6 * max(len(methods), 2), 4.6 * len(regions)), squeeze=False,
                             sharey="row")
    for i, region in enumerate(regions):
        wide = tot[tot["region"] == region].pivot_table(index="case", columns="source", values="count", aggfunc="first")
        for j, m in enumerate(methods):
            ax = axes[i][j]
            for k, r in enumerate(raters):
                if m not in wide or r not in wide:
                    continue
                pair = wide[[m, r]].dropna()
                mean, diff = (pair[m] + pair[r]) / 2, pair[m] - pair[r]
                ax.scatter(mean, diff, color=rcolors[r], marker=MARKERS[k % len(MARKERS)], s=30, alpha=0.85,
                           edgecolor="black", linewidth=0.4)
                row = corr[(corr["region"] == region) & (corr["x"] == m) & (corr["y"] == r)]
                if len(row) and np.isfinite(row["bias"].iloc[0]):
                    b, lo, hi = row[["bias", "loa_low", "loa_high"]].iloc[0]
                    ax.axhline(b, color=rcolors[r], linewidth=1.5,
                               label=f"vs {r}: bias {b:+.1f}" + (f", LoA [{lo:.1f}, {hi:.1f}]" if np.isfinite(lo) else ""))
                    if np.isfinite(lo):
                        ax.axhline(lo, color=rcolors[r], linewidth=1, linestyle="--")
                        ax.axhline(hi, color=rcolors[r], linewidth=1, linestyle="--")
            ax.axhline(0, color="gray", linewidth=0.8)
            ax.set_title(f"{region}: {m} - rater", fontsize=11)
            ax.set_xlabel("mean of the two counts")
            ax.set_ylabel("difference (model - rater)")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                # below the panel: inside it would cover the outlying differences
                ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    return _save(fig, out_png)
