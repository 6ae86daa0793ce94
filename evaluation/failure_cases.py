"""Figure 7 of the paper: each method's worst cases, with missed PVS and false positives marked.

Choice (automatic, documented in report.md): per method, the case with the lowest DSC and the case with
the largest missed PVS volume (false-negative voxels x voxel volume); when both are the same case, the
case with the second-largest missed volume is shown too, so that two different failures appear where the
test group has them. Ties go to the case name, so the choice is deterministic. Per chosen case two axial
slices: the one with most missed voxels and the one with most false-positive voxels (a different slice
where one exists). Colours as in Fig. 4: TP green, FP red, FN (missed) blue; each missed 2D component is
also circled in blue and each false-positive component boxed in red, so one-voxel PVS stay visible on
large slices.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from scipy import ndimage

from .counts import structure_2d
from .figures import FN_RGB, FP_RGB, TP_RGB, _crop_box, _save, no_data_figure, overlay_rgb

FIGURE_FILE = "fig7_failure_cases.png"


@dataclass(frozen=True)
class FailureCase:
    method: str
    reason: str  # "lowest DSC" or "largest missed volume"
    case: str
    dsc: float
    missed_mm3: float


def _per_case(metrics: pd.DataFrame, method: str) -> pd.DataFrame:
    w = metrics[metrics["method"] == method].pivot_table(index="case", columns="metric", values="value",
                                                          aggfunc="first")
    for col in ("dsc", "fn_voxels", "tp_voxels", "vol_true_mm3"):
        if col not in w:
            w[col] = np.nan
    # missed volume in mm3 without the spacing: the missed fraction of the true volume
    true_vox = w["tp_voxels"] + w["fn_voxels"]
    w["missed_mm3"] = np.where(true_vox > 0, w["vol_true_mm3"] * w["fn_voxels"] / true_vox.where(true_vox > 0, 1), 0.0)
    return w.reset_index()


def pick_failure_cases(metrics: pd.DataFrame, methods: list[str]) -> list[FailureCase]:
    """The worst cases per method (module docstring), in method order."""
    out: list[FailureCase] = []
    for m in methods:
        w = _per_case(metrics, m).dropna(subset=["dsc"])
        if w.empty:
            continue
        low = w.sort_values(["dsc", "case"], kind="stable").iloc[0]
        by_miss = w.sort_values(["missed_mm3", "case"], ascending=[False, True], kind="stable")
        both = by_miss.iloc[0]["case"] == low["case"] and by_miss.iloc[0]["missed_mm3"] > 0
        out.append(FailureCase(m, "lowest DSC, largest missed volume" if both else "lowest DSC", str(low["case"]),
                               float(low["dsc"]), float(low["missed_mm3"])))
        # the largest miss, or the next one when the lowest-DSC case is also the largest miss
        other = by_miss[(by_miss["case"] != low["case"]) & (by_miss["missed_mm3"] > 0)]
        if not other.empty:
            r = other.iloc[0]
            out.append(FailureCase(m, "2nd-largest missed volume" if both else "largest missed volume", str(r["case"]),
                                   float(r["dsc"]), float(r["missed_mm3"])))
    return out


def error_slices(gt: np.ndarray, pred: np.ndarray) -> list[tuple[str, int]]:
    """[(label, z)]: the slice with most missed voxels, then the one with most false positives (a different
    slice where one has any); the slice with most truth voxels when the prediction makes no error at all."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    fn = (gt & ~pred).sum(axis=(1, 2))
    fp = (pred & ~gt).sum(axis=(1, 2))
    out = []
    if fn.max() > 0:
        out.append(("most missed", int(np.argmax(fn))))
    if fp.max() > 0:
        order = np.argsort(-fp, kind="stable")
        z = next((int(k) for k in order if fp[k] > 0 and all(k != o for _, o in out)), int(order[0]))
        if all(z != o for _, o in out):
            out.append(("most false positives", z))
    if not out:
        out.append(("no error; most PVS", int(np.argmax(gt.sum(axis=(1, 2))))))
    return out


def _mark_components(ax, mask2d: np.ndarray, box: tuple[slice, slice], color, marker: str) -> int:
    lab, n = ndimage.label(mask2d, structure=structure_2d(8))
    if n == 0:
        return 0
    centres = np.asarray(ndimage.center_of_mass(mask2d, lab, range(1, n + 1)))
    y0, x0 = box[0].start or 0, box[1].start or 0
    ax.scatter(centres[:, 1] - x0, centres[:, 0] - y0, s=90, facecolors="none", edgecolors=[color], marker=marker,
               linewidths=1.2)
    return n


def fig_failure_cases(panels: list[dict], out_png: Path, aspect: float = 1.0) -> Path:
    """Fig. 7: one row per chosen (method, case), one column per error slice. panels: [{title, slices: [{label,
    z, image (2D or None), gt (2D), pred (2D), window}]}]."""
    if not panels:
        return no_data_figure(out_png, "Worst cases", "no case to show")
    ncol = max(len(p["slices"]) for p in panels)
    fig, axes = plt.subplots(len(panels), ncol, figsize=(4.2 * ncol, 3.9 * len(panels) + 0.6), squeeze=False)
    for r, p in enumerate(panels):
        for c in range(ncol):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(p["slices"]):
                ax.set_axis_off()
                continue
            s = p["slices"][c]
            gt, pr = s["gt"].astype(bool), s["pred"].astype(bool)
            box = _crop_box(gt, pr, margin=12)
            ax.imshow(overlay_rgb(s["image"], gt, pr, s.get("window"))[box], interpolation="nearest", aspect=aspect)
            n_fn = _mark_components(ax, (gt & ~pr)[box], box, FN_RGB, "o")
            n_fp = _mark_components(ax, (pr & ~gt)[box], box, FP_RGB, "s")
            ax.set_title(f"slice {s['z']} ({s['label']})\n{n_fn} missed, {n_fp} false-positive 2D components",
                         fontsize=9)
        axes[r][0].set_ylabel(p["title"], fontsize=9)
    handles = [Patch(color=TP_RGB, label="TP (both)"), Patch(color=FP_RGB, label="FP (prediction only, boxed)"),
               Patch(color=FN_RGB, label="FN (missed PVS, circled)")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=10, frameon=False)
    fig.suptitle("Worst cases per method: lowest DSC and largest missed volume", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return _save(fig, out_png)


def failure_panels(picks: list[FailureCase], load_case) -> tuple[list[dict], float]:
    """Builds the figure's panels; load_case(case) -> (gt 3D, {method: pred 3D}, image 3D or None, geometry)."""
    panels, aspect = [], 1.0
    for fc in picks:
        gt, preds, img, geom = load_case(fc.case)
        pred = preds.get(fc.method)
        if pred is None:
            continue
        aspect = geom.spacing_zyx[1] / geom.spacing_zyx[2]
        window = tuple(np.percentile(img, [1, 99.5])) if img is not None else None
        slices = [{"label": lab, "z": z, "image": None if img is None else img[z], "gt": gt[z], "pred": pred[z],
                   "window": window} for lab, z in error_slices(gt, pred)]
        panels.append({"title": f"{fc.method}: {fc.reason}\n{fc.case} (DSC {fc.dsc:.2f}, missed {fc.missed_mm3:.0f} mm³)",
                       "slices": slices, "pick": fc})
    return panels, aspect


def failure_markdown(panels: list[dict]) -> list[str]:
    from .stats import markdown_table
    L = ["## Worst cases (Fig. 7)", "",
         "Chosen automatically per method: the case with the lowest DSC and the case with the largest missed PVS "
         "volume (the next one when both are the same case); per case the slice with most missed voxels and the one "
         "with most false-positive voxels. Blue = missed (circled), red = false positive (boxed), green = TP.", ""]
    if not panels:
        return L + ["No case to show.", "", f"![Fig. 7]({FIGURE_FILE})", ""]
    rows = [[p["pick"].method, p["pick"].reason, p["pick"].case, f"{p['pick'].dsc:.3f}", f"{p['pick'].missed_mm3:.1f}",
             ", ".join(f"{s['z']} ({s['label']})" for s in p["slices"])] for p in panels]
    L.append(markdown_table(["method", "why", "case", "DSC", "missed volume (mm³)", "slices shown"], rows))
    return L + ["", f"![Fig. 7]({FIGURE_FILE})", ""]
