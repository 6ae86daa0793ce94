"""Per-case segmentation metrics (voxel and lesion-wise) and the evaluation of prediction folders.

Voxel metrics use the paper's formulas with TP/FP/FN counted over the whole volume:
    DSC = 2 TP / (2 TP + FP + FN),  SEN = TP / (TP + FN),  PPV = TP / (TP + FP).

Lesion-wise detection (3D connected components, `connectivity` 6, 18 or 26 voxels; default 26, i.e.
every face-, edge- or corner-sharing voxel belongs to the same component), rule in lesion_matching.py:
    default `lesion_rule="one_to_one"`: maximum-weight bipartite matching of true and predicted components
    on their IoU, a pair counts when IoU >= `min_iou` (default 0.1); merges and splits are errors;
    named option `lesion_rule="any_overlap"`: the old many-to-many touch rule (can be gamed: an all-ones
    prediction scores 1.0), kept only to compare with results made before issue 11.
    lesion_recall = detected true components / true components,
    lesion_precision = matched predicted components / predicted components,
    lesion_f1 = 2 P R / (P + R).
  n_true_detected and n_pred_matched are reported (equal under one_to_one), and n_merging_pred (predicted
  components touching >= 2 true ones) and n_split_true (true components touched by >= 2 predicted ones),
  so the kind of error stays visible. The same counts binned by component size in voxels
  (`n_true_<bin>`, `n_true_hit_<bin>`, `lesion_recall_<bin>`, and `n_pred_...`, `lesion_precision_<bin>`)
  are in size_detection.py.

Empty-mask conventions (tested in tests/test_metrics.py):
    | truth | prediction | DSC | SEN | PPV | lesion recall | lesion precision | lesion F1 | HD95 |
    | empty | empty      | 1   | NaN | NaN | NaN           | NaN              | 1         | 0    |
    | empty | non-empty  | 0   | NaN | 0   | NaN           | 0                | 0         | NaN  |
    | non-empty | empty  | 0   | 0   | NaN | 0             | NaN              | 0         | NaN  |
  A ratio whose denominator is zero is undefined (NaN) and is skipped by the nanmean/nanstd of the summary;
  DSC and lesion F1 are symmetric agreement scores, so two empty masks agree perfectly (1), and exactly one
  empty mask scores 0. nnU-Net's own `compute_metrics` reports Dice = NaN when both are empty; we differ
  because a PVS-free slab/volume that the model leaves empty is a correct result, not a missing one.
  (nnU-Net's evaluation module is not imported here: it pulls in torch through its plans handler, and the
  evaluation package is kept torch-free by the interface contract.)

HD95 (optional, off by default): the 95th percentile Hausdorff distance in mm between the surfaces of
the two masks, symmetric as max(P95(d(pred->truth)), P95(d(truth->pred))). Surface voxels are the
foreground voxels removed by one 6-connected erosion (image border counts as background); distances are
exact Euclidean distances between surface-voxel centres in physical units (k-d tree), which is much faster
than full-volume distance transforms for sparse PVS masks.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree
from tqdm import tqdm

from nnunetv2_mfns.errors import MfnsInputError

from .io import (FILE_ENDING, describe_geometry_difference, list_cases, prediction_files, read_binary_mask,
                 same_geometry)
from .lesion_matching import DEFAULT_LESION_RULE, DEFAULT_MIN_IOU, check_lesion_rule, match_lesions
from .size_detection import size_metrics

logger = logging.getLogger(__name__)

CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}
# order of the metrics in tables; hd95_mm only when requested
METRIC_NAMES = ("dsc", "sen", "ppv", "lesion_recall", "lesion_precision", "lesion_f1",
                "n_true_components", "n_pred_components", "n_true_detected", "n_pred_matched",
                "n_merging_pred", "n_split_true",
                "vol_true_mm3", "vol_pred_mm3", "tp_voxels", "fp_voxels", "fn_voxels")


def structure_3d(connectivity: int) -> np.ndarray:
    """scipy.ndimage structuring element for 6-, 18- or 26-connectivity."""
    if connectivity not in CONNECTIVITY_RANK:
        raise MfnsInputError(f"connectivity: expected 6, 18 or 26, got {connectivity}")
    return ndimage.generate_binary_structure(3, CONNECTIVITY_RANK[connectivity])


def label_components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected components of a 3D binary mask (labels 1..n)."""
    lab, n = ndimage.label(mask, structure=structure_3d(connectivity))
    return lab, int(n)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def _surface_points(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Physical coordinates (mm) of the surface voxels of a mask, computed on its bounding box only."""
    idx = np.nonzero(mask)
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    # pad so that the bounding-box border behaves like background, as the image border does
    padded = np.pad(crop, 1)
    eroded = ndimage.binary_erosion(padded, structure=ndimage.generate_binary_structure(mask.ndim, 1))[
        tuple(slice(1, -1) for _ in range(mask.ndim))]
    pts = np.argwhere(crop & ~eroded) + np.asarray(lo)
    return pts * np.asarray(spacing, dtype=float)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm (0 if both empty, NaN if exactly one is empty)."""
    p_any, g_any = bool(pred.any()), bool(gt.any())
    if not p_any and not g_any:
        return 0.0
    if p_any != g_any:
        return math.nan
    sp, sg = _surface_points(pred, spacing), _surface_points(gt, spacing)
    d_pg = cKDTree(sg).query(sp, k=1)[0]
    d_gp = cKDTree(sp).query(sg, k=1)[0]
    return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


def evaluate_case(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], connectivity: int = 26,
                  compute_hd95: bool = False, gt_labels: tuple[np.ndarray, int] | None = None,
                  lesion_rule: str = DEFAULT_LESION_RULE, min_iou: float = DEFAULT_MIN_IOU) -> dict[str, float]:
    """All per-case metrics of a binary prediction against a binary truth.

    spacing is given in the arrays' axis order (for SimpleITK arrays: z, y, x in mm). gt_labels may pass a
    precomputed `label_components(gt, connectivity)` so that a truth shared by several methods is labelled once.
    lesion_rule / min_iou: the lesion matching rule (module docstring, lesion_matching.py).
    Conventions for empty masks: see the module docstring.
    """
    check_lesion_rule(lesion_rule, min_iou)
    pred = np.asarray(pred).astype(bool, copy=False)
    gt = np.asarray(gt).astype(bool, copy=False)
    if gt.ndim != 3:
        raise MfnsInputError(f"truth must be a 3D array, got {gt.ndim}D")
    if pred.shape != gt.shape:
        raise MfnsInputError(f"prediction shape {pred.shape} != truth shape {gt.shape}")
    if len(spacing) != gt.ndim:
        raise MfnsInputError(f"spacing {tuple(spacing)} has {len(spacing)} entries for a {gt.ndim}D array")
    voxel_mm3 = float(np.prod(spacing))

    both = pred & gt
    tp = int(np.count_nonzero(both))
    n_pred_vox = int(np.count_nonzero(pred))
    n_gt_vox = int(np.count_nonzero(gt))
    fp, fn = n_pred_vox - tp, n_gt_vox - tp

    if n_pred_vox == 0 and n_gt_vox == 0:
        dsc = 1.0
    else:
        dsc = 2.0 * tp / (2.0 * tp + fp + fn)

    gt_lab, n_gt = gt_labels if gt_labels is not None else label_components(gt, connectivity)
    pred_lab, n_pred = label_components(pred, connectivity)
    match = match_lesions(gt_lab, n_gt, pred_lab, n_pred, lesion_rule, min_iou)
    lesion = match.scores()

    out = {
        "dsc": float(dsc),
        "sen": _ratio(tp, tp + fn),
        "ppv": _ratio(tp, tp + fp),
        **lesion,
        "n_true_components": float(n_gt),
        "n_pred_components": float(n_pred),
        "n_true_detected": float(match.n_true_detected),
        "n_pred_matched": float(match.n_pred_matched),
        "n_merging_pred": float(match.n_merging_pred),
        "n_split_true": float(match.n_split_true),
        "vol_true_mm3": n_gt_vox * voxel_mm3,
        "vol_pred_mm3": n_pred_vox * voxel_mm3,
        "tp_voxels": float(tp),
        "fp_voxels": float(fp),
        "fn_voxels": float(fn),
    }
    # the same components and matches, binned by size (size_detection.py)
    out.update(size_metrics(match))
    if compute_hd95:
        out["hd95_mm"] = hd95(pred, gt, spacing)
    return out


def check_folders(gt_dir: Path, pred_dirs: dict[str, Path | list[Path]], allow_missing: bool = False
                  ) -> tuple[list[str], dict[str, dict[str, Path]], dict[str, list[str]]]:
    """Checks that each method's prediction folder(s) hold exactly the label folder's cases.

    Returns (truth cases, {method: {case: prediction file}} to evaluate, {method: missing cases}). Extra
    prediction files (a case without a label) are always an error: they mean the wrong folder or the wrong
    label set. Missing predictions are an error unless allow_missing, in which case they are returned.
    """
    if not pred_dirs:
        raise MfnsInputError("--pred: at least one NAME=DIR prediction folder is needed")
    gt_cases = list_cases(gt_dir, "label")
    gt_set = set(gt_cases)
    todo, missing = {}, {}
    for method, files in prediction_files(pred_dirs).items():
        extra = sorted(set(files) - gt_set)
        if extra:
            raise MfnsInputError(f"{files[extra[0]]}: prediction of method {method!r} has no label "
                                 f"in {gt_dir}" + (f" ({len(extra) - 1} more extra cases)" if len(extra) > 1 else ""))
        miss = [c for c in gt_cases if c not in files]
        if miss and not allow_missing:
            d = pred_dirs[method]
            d = d[0] if isinstance(d, (list, tuple)) else d
            raise MfnsInputError(f"{Path(d) / (miss[0] + FILE_ENDING)}: prediction of method {method!r} is missing"
                                 + (f" ({len(miss) - 1} more missing)" if len(miss) > 1 else "")
                                 + "; use --allow-missing to evaluate the cases that exist")
        missing[method] = miss
        todo[method] = {c: files[c] for c in gt_cases if c in files}
    return gt_cases, todo, missing


def _evaluate_one_case(case: str, gt_path: Path, preds: dict[str, Path], connectivity: int,
                       compute_hd95: bool, lesion_rule: str = DEFAULT_LESION_RULE,
                       min_iou: float = DEFAULT_MIN_IOU) -> list[tuple[str, str, str, float]]:
    gt, g_geom = read_binary_mask(gt_path, role="label")
    gt_labels = label_components(gt, connectivity)
    rows = []
    for method, p in preds.items():
        pred, p_geom = read_binary_mask(p, role="prediction")
        if not same_geometry(g_geom, p_geom):
            raise MfnsInputError(f"{p}: geometry differs from the label {gt_path.name} "
                                 f"({describe_geometry_difference(p_geom, g_geom)})")
        m = evaluate_case(pred, gt, g_geom.spacing_zyx, connectivity, compute_hd95, gt_labels, lesion_rule, min_iou)
        rows.extend((case, method, k, v) for k, v in m.items())
    return rows


def evaluate_folders(gt_dir: Path, pred_dirs: dict[str, Path | list[Path]], case_to_fold: dict[str, int] | None = None,
                     allow_missing: bool = False, compute_hd95: bool = False, connectivity: int = 26,
                     num_workers: int = 1, progress: bool = True, lesion_rule: str = DEFAULT_LESION_RULE,
                     min_iou: float = DEFAULT_MIN_IOU) -> pd.DataFrame:
    """Evaluates every method's prediction folder (or list of folders, e.g. one per fold) against the labels.

    Returns a tidy DataFrame with columns case, method, fold, metric, value (fold is NA for cases that no
    fold tests). With allow_missing, `df.attrs["missing"]` maps each method to the cases it lacks.
    Each truth file is read and labelled once and shared by all methods. num_workers > 1 evaluates cases in
    parallel processes.
    """
    structure_3d(connectivity)  # validate before any work
    check_lesion_rule(lesion_rule, min_iou)
    gt_dir = Path(gt_dir)
    gt_cases, todo, missing = check_folders(gt_dir, pred_dirs, allow_missing)
    jobs = []
    for case in gt_cases:
        preds = {m: todo[m][case] for m in pred_dirs if case in todo[m]}
        if preds:
            jobs.append((case, gt_dir / (case + FILE_ENDING), preds, connectivity, compute_hd95, lesion_rule, min_iou))
    for m, miss in missing.items():
        if miss:
            logger.warning("method %s: %d case(s) without prediction skipped: %s", m, len(miss), ", ".join(miss))

    rows: list[tuple[str, str, str, float]] = []
    if num_workers > 1 and len(jobs) > 1:
        # spawn, as nnU-Net's own evaluation does: forking a process that holds torch/OpenMP threads can hang
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            futures = [ex.submit(_evaluate_one_case, *j) for j in jobs]
            for f in tqdm(futures, desc="evaluate", disable=not progress):
                rows.extend(f.result())
    else:
        for j in tqdm(jobs, desc="evaluate", disable=not progress):
            rows.extend(_evaluate_one_case(*j))

    df = pd.DataFrame(rows, columns=["case", "method", "metric", "value"])
    folds = case_to_fold or {}
    df.insert(2, "fold", pd.array([folds.get(c) for c in df["case"]], dtype="Int64"))
    df["value"] = df["value"].astype(float)
    df.attrs["missing"] = {m: list(v) for m, v in missing.items() if v}
    df.attrs["methods"] = list(pred_dirs)
    df.attrs["lesion_rule"] = {"lesion_rule": lesion_rule, "min_iou": float(min_iou), "connectivity": connectivity}
    return df


def metrics_wide(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, method, fold), one column per metric."""
    wide = df.pivot_table(index=["case", "method"], columns="metric", values="value", aggfunc="first", dropna=False)
    folds = df.drop_duplicates(["case", "method"]).set_index(["case", "method"])["fold"]
    wide.insert(0, "fold", folds.reindex(wide.index))
    order = [m for m in METRIC_NAMES + ("hd95_mm",) if m in wide.columns]
    return wide[["fold"] + order].reset_index()
