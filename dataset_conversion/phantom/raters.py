"""Rating-slice counts: the truth (2D connected components of the label) and two simulated raters.

Truth: PVS on a rating slice = 2D connected components (8-connectivity in-plane) of the label inside
the region mask on that slice (docs/interfaces.md).

Raters look at the image, not the label. Each visible PVS component is detected with a probability
that falls for low relative contrast (faint, thin, partial-volumed PVS) and for very small in-plane
areas; each rater has their own contrast threshold, a per-subject shift of it (day-to-day variation),
and a small rate of false positives on PVS mimics (confounder components on the slice). That makes
raters undercount relative to the truth, correlate with it, and disagree a little with each other.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class RaterModel:
    name: str
    contrast_threshold: float  # relative contrast (PVS excess / local tissue) detected with p = 0.5
    contrast_softness: float = 0.04
    small_area_mm2: float = 0.6  # components much smaller than this are often overlooked
    small_miss: float = 0.5
    subject_jitter: float = 0.15  # log-SD of the per-subject threshold shift (day-to-day variation)
    count_noise: float = 0.1  # log-SD of splitting/merging/double counting on the whole slice
    fp_per_mimic: float = 0.04  # probability of counting a mimic component as PVS


DEFAULT_RATERS = (RaterModel("rater1", contrast_threshold=0.17), RaterModel("rater2", contrast_threshold=0.21,
                                                                           small_miss=0.6, fp_per_mimic=0.06))


def components_2d(mask2d: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask2d, structure=EIGHT)


def true_count(label: np.ndarray, region: np.ndarray, slice_index: int) -> int:
    """2D connected components (8-connectivity) of label & region on axial slice `slice_index` (numpy axis 0)."""
    return int(components_2d((label[slice_index] > 0) & (region[slice_index] > 0))[1])


def simulate_rater_counts(rng: np.random.Generator, label: np.ndarray, region: np.ndarray, slice_index: int,
                          rel_contrast: np.ndarray, conf_mask: np.ndarray, pixel_area_mm2: float,
                          raters: tuple[RaterModel, ...] = DEFAULT_RATERS) -> dict[str, int]:
    """Counts of each rater on one rating slice (see module docstring for the error model)."""
    lab, n = components_2d((label[slice_index] > 0) & (region[slice_index] > 0))
    idx = np.arange(1, n + 1)
    if n:
        peak = ndimage.maximum(rel_contrast[slice_index], lab, idx)
        area = ndimage.sum_labels(np.ones_like(lab), lab, idx) * pixel_area_mm2
    else:
        peak = area = np.zeros(0)
    _, n_mimic = components_2d((conf_mask[slice_index] > 0) & (region[slice_index] > 0))
    out = {}
    for r in raters:
        thr = r.contrast_threshold * np.exp(rng.normal(0, r.subject_jitter))
        p = 1.0 / (1.0 + np.exp(-(np.asarray(peak) - thr) / r.contrast_softness))
        p = p * (1.0 - r.small_miss * np.exp(-np.asarray(area) / r.small_area_mm2))
        hits = int((rng.random(n) < p).sum()) if n else 0
        false_pos = int(rng.binomial(n_mimic, r.fp_per_mimic)) if n_mimic else 0
        hits = int(np.round(hits * np.exp(rng.normal(0, r.count_noise))))
        out[r.name] = hits + false_pos
    return out


def raters_as_dict(raters: tuple[RaterModel, ...] = DEFAULT_RATERS) -> list[dict]:
    return [asdict(r) for r in raters]
