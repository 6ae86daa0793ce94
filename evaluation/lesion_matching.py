"""Lesion-wise (connected-component) detection: which true PVS a prediction found, and which predicted
components are correct.

Default rule, ``lesion_rule="one_to_one"``: each true component is paired with AT MOST one predicted
component and vice versa, by a maximum-weight bipartite matching on the component IoU
(``scipy.optimize.linear_sum_assignment``), and a pair only counts when its IoU >= ``min_iou``
(default 0.1). So
    * one predicted blob that covers several PVS matches at most one of them (and only if it is not
      much larger than that PVS): the other PVS are missed, i.e. a merge is an error;
    * a PVS broken into several predicted pieces matches one piece; the other pieces are false
      positives, i.e. a split is an error;
    * a prediction of all ones is one huge component whose IoU with any PVS is far below 0.1: lesion
      recall, precision and F1 are 0 (under the old any-overlap rule it scored 1.0).
Where the rule comes from: the VALDO challenge's detection F1 (Sudre et al., "Where is VALDO?",
Medical Image Analysis 2024, arXiv:2208.07167, section 2.5) attributes each reference element at most
one predicted element, with a task-specific association criterion (e.g. centres of mass < 5 mm apart
for microbleeds; we use overlap, since PVS are elongated and close together); Metrics Reloaded (Maier-Hein et al., Nature Methods 2024)
recommends exactly this pairing of a localisation criterion (IoU above a threshold) with an optimal
(Hungarian) assignment strategy for instance-level detection, as implemented by panoptica (Kofler et
al. 2023) and discussed for small multi-instance targets by CC-Metrics (Jaus et al. 2024). The IoU
threshold is ours and is deliberately low (Metrics Reloaded's common 0.5 is for large objects): PVS
are 1-3 voxels wide, so a prediction that is one voxel thicker than a thin PVS has IoU ~0.3-0.5, a
3x3 in-plane patch on a one-voxel PVS still matches (IoU 1/9), a 3x3x3 cube does not (1/27).

Named alternative, ``lesion_rule="any_overlap"`` (the project's rule before issue 11, kept only for
comparison with old results): a true component is detected if any of its voxels is predicted, a
predicted component is correct if any of its voxels is true. It is many-to-many and can be gamed
(an all-ones prediction scores lesion F1 = 1.0); never use it to rank methods.

Both rules also report how many predicted components touch two or more true components (merges) and
how many true components are touched by two or more predicted components (splits), measured on any
overlap, so that the kind of error stays visible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components

from nnunetv2_mfns.errors import MfnsInputError

LESION_RULES = ("one_to_one", "any_overlap")
DEFAULT_LESION_RULE = "one_to_one"
DEFAULT_MIN_IOU = 0.1


@dataclass
class LesionMatch:
    """Result of matching the components of one case (component labels are 1-based)."""
    n_true: int
    n_pred: int
    n_true_detected: int
    n_pred_matched: int
    n_merging_pred: int  # predicted components touching >= 2 true components
    n_split_true: int    # true components touched by >= 2 predicted components
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (true label, pred label, IoU), one_to_one only
    true_detected: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per true label 1..n (index 0 unused)
    pred_matched: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))   # per predicted label 1..n (index 0 unused)
    true_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # voxels per true label (index 0 unused)
    pred_sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # voxels per predicted label (index 0 unused)

    def scores(self) -> dict[str, float]:
        """lesion_recall, lesion_precision, lesion_f1 with the empty-mask conventions of metrics.py."""
        rec = self.n_true_detected / self.n_true if self.n_true else math.nan
        prec = self.n_pred_matched / self.n_pred if self.n_pred else math.nan
        if self.n_true == 0 and self.n_pred == 0:
            f1 = 1.0
        elif self.n_true == 0 or self.n_pred == 0 or rec + prec == 0:
            f1 = 0.0
        else:
            f1 = 2 * prec * rec / (prec + rec)
        return {"lesion_recall": rec, "lesion_precision": prec, "lesion_f1": float(f1)}


def check_lesion_rule(lesion_rule: str, min_iou: float) -> None:
    """Refuses an unknown rule or a threshold outside (0, 1] before any work is done."""
    if lesion_rule not in LESION_RULES:
        raise MfnsInputError(f"lesion_rule: expected one of {', '.join(LESION_RULES)}, got {lesion_rule!r}")
    if not (0.0 < float(min_iou) <= 1.0):
        raise MfnsInputError(f"min_iou: must be in (0, 1], got {min_iou}")


def _overlap_pairs(g_fg: np.ndarray, p_at_g: np.ndarray, n_pred: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true label, pred label, overlapping voxels) for every pair of components that share a voxel, from the true
    labels of the truth's foreground voxels and the predicted labels at the same voxels."""
    both = p_at_g > 0
    if not both.any():
        e = np.zeros(0, np.int64)
        return e, e, e
    key = g_fg[both].astype(np.int64) * (n_pred + 1) + p_at_g[both].astype(np.int64)
    uniq, inter = np.unique(key, return_counts=True)
    return uniq // (n_pred + 1), uniq % (n_pred + 1), inter


def _max_weight_matching(g: np.ndarray, p: np.ndarray, w: np.ndarray, n_gt: int, n_pred: int
                         ) -> list[tuple[int, int, float]]:
    """Maximum-weight one-to-one matching on the sparse bipartite graph of candidate pairs.

    The graph is cut into its connected parts first (almost every part is a single pair), and
    linear_sum_assignment solves each multi-pair part on its small dense matrix: a dense matrix over
    all components of a noisy case (thousands x thousands) would be slow and is not needed.
    """
    if g.size == 0:
        return []
    # nodes: true labels 1..n_gt -> 0..n_gt-1, pred labels 1..n_pred -> n_gt..n_gt+n_pred-1
    n = n_gt + n_pred
    adj = sparse.coo_matrix((np.ones(g.size), (g - 1, n_gt + p - 1)), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    out = []
    part = comp[g - 1]
    order = np.argsort(part, kind="stable")
    bounds = np.flatnonzero(np.diff(part[order])) + 1
    for idx in np.split(order, bounds):
        if idx.size == 1:
            k = idx[0]
            out.append((int(g[k]), int(p[k]), float(w[k])))
            continue
        gs, gi = np.unique(g[idx], return_inverse=True)
        ps, pi = np.unique(p[idx], return_inverse=True)
        m = np.zeros((gs.size, ps.size))
        m[gi, pi] = w[idx]
        rows, cols = linear_sum_assignment(m, maximize=True)
        out.extend((int(gs[r]), int(ps[c]), float(m[r, c])) for r, c in zip(rows, cols) if m[r, c] > 0)
    return sorted(out)


def match_lesions(gt_lab: np.ndarray, n_gt: int, pred_lab: np.ndarray, n_pred: int,
                  lesion_rule: str = DEFAULT_LESION_RULE, min_iou: float = DEFAULT_MIN_IOU) -> LesionMatch:
    """Matches labelled true and predicted components (arrays from `metrics.label_components`)."""
    check_lesion_rule(lesion_rule, min_iou)
    # work on the foreground voxels only: PVS masks are sparse, and full-volume passes dominate the cost
    g_flat, p_flat = gt_lab.ravel(), pred_lab.ravel()
    g_idx, p_idx = np.flatnonzero(g_flat), np.flatnonzero(p_flat)
    g_fg = g_flat[g_idx]
    g, p, inter = _overlap_pairs(g_fg, p_flat[g_idx], n_pred)
    n_merging = int(np.count_nonzero(np.bincount(p, minlength=n_pred + 1)[1:] >= 2)) if g.size else 0
    n_split = int(np.count_nonzero(np.bincount(g, minlength=n_gt + 1)[1:] >= 2)) if g.size else 0
    detected = np.zeros(n_gt + 1, bool)
    matched = np.zeros(n_pred + 1, bool)
    size_g = np.bincount(g_fg, minlength=n_gt + 1)
    size_p = np.bincount(p_flat[p_idx], minlength=n_pred + 1)
    if lesion_rule == "any_overlap":
        detected[g] = True
        matched[p] = True
        return LesionMatch(n_gt, n_pred, int(np.unique(g).size), int(np.unique(p).size), n_merging, n_split,
                           [], detected, matched, size_g, size_p)
    if g.size:
        iou = inter / (size_g[g] + size_p[p] - inter)
        keep = iou >= min_iou
        pairs = _max_weight_matching(g[keep], p[keep], iou[keep], n_gt, n_pred)
    else:
        pairs = []
    for t, q, _ in pairs:
        detected[t] = True
        matched[q] = True
    return LesionMatch(n_gt, n_pred, len(pairs), len(pairs), n_merging, n_split, pairs, detected, matched, size_g,
                       size_p)
