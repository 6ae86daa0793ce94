"""Rating-slice counts: the truth (2D connected components of the label) and simulated raters.

Truth: PVS on a rating slice = 2D connected components (8-connectivity in-plane) of the label inside
the region mask on that slice (docs/interfaces.md).

Raters never see the label. Each one reads the *acquired* rating slice (noise, bias field, partial
volume and all) inside the region, the way a person scans a T2w slice for bright dots and lines:

1. look at the slice at their own reading scale (Gaussian blur of `blur_mm`);
2. judge brightness against the surrounding tissue: relative contrast to a local background (median
   over `background_mm`), which the smooth receive-field bias does not change;
3. call a spot when it stands out from what the slice's background looks like: above `k_noise` robust
   SDs of the relative contrast inside the region (so a noisier scan needs brighter PVS) and above an
   absolute contrast floor `min_contrast`; the threshold of a reading session varies from subject to
   subject (`threshold_jitter`), and each rater has their own perceptual noise (`perception_noise`, a
   smooth random field at the reading scale), so two raters disagree on the same faint PVS;
4. count connected spots (8-connectivity) that are at least `min_area_mm2` large (smaller ones are
   dismissed as noise) and no wider than `max_width_mm` (wider bright structures look like lacunes or
   sulci, STRIVE: PVS < 3 mm).

Consequences that nobody programs in: faint and thin PVS are missed, neighbouring PVS merge into one
spot, slightly hyperintense foci, small sulci and noise peaks are sometimes counted, and a scan with a
lower SNR gets lower counts. The parameters were calibrated on 20 realistic-profile subjects
(docs/phantom.md, `benchmarks/calibrate_raters.py`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)
MAD_TO_SD = 1.4826  # robust SD of a normal sample from its median absolute deviation


@dataclass(frozen=True)
class RaterModel:
    name: str
    k_noise: float = 4.5  # a spot must exceed this many robust SDs of the slice's relative contrast ...
    min_contrast: float = 0.08  # ... and at least this relative contrast (the eye's contrast floor)
    threshold_jitter: float = 0.2  # log-SD of the per-subject threshold (reading session)
    perception_noise: float = 0.8  # SD of the rater's own noise, in robust SDs of the slice
    blur_mm: float = 0.5  # reading scale (Gaussian sigma)
    background_mm: float = 8.0  # width of the local-background median window
    min_area_mm2: float = 0.5  # smaller spots are dismissed as noise
    max_width_mm: float = 3.0  # wider spots are lacunes/sulci, not PVS


DEFAULT_RATERS = (
    RaterModel("rater1"),
    RaterModel("rater2", k_noise=4.8, min_contrast=0.09, blur_mm=0.6, min_area_mm2=0.6),
)


def components_2d(mask2d: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask2d, structure=EIGHT)


def true_count(label: np.ndarray, region: np.ndarray, slice_index: int) -> int:
    """2D connected components (8-connectivity) of label & region on axial slice `slice_index` (numpy axis 0)."""
    return int(components_2d((label[slice_index] > 0) & (region[slice_index] > 0))[1])


def _odd(n: float) -> int:
    k = max(1, int(round(n)))
    return k if k % 2 else k + 1


def _crop_box(region: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Bounding box of the region plus a margin, so filters run on the part of the slice that matters."""
    ys, xs = np.nonzero(region)
    return (slice(max(0, ys.min() - margin), min(region.shape[0], ys.max() + margin + 1)),
            slice(max(0, xs.min() - margin), min(region.shape[1], xs.max() + margin + 1)))


def rater_count(rng: np.random.Generator, image2d: np.ndarray, region2d: np.ndarray, pixel_mm: float,
                rater: RaterModel) -> int:
    """Number of PVS one rater counts on one acquired slice inside the region (see module docstring)."""
    region = region2d > 0
    if not region.any():
        return 0
    margin = _odd(rater.background_mm / pixel_mm) + 4
    box = _crop_box(region, margin)
    img = image2d[box].astype(np.float32).astype(np.float64)  # what is on disk: float32
    reg = region[box]
    blur = rater.blur_mm / pixel_mm
    seen = ndimage.gaussian_filter(img, blur, mode="nearest")
    background = ndimage.median_filter(seen, size=_odd(rater.background_mm / pixel_mm), mode="nearest")
    rel = seen / np.maximum(background, 1e-6 * max(float(np.abs(img).max()), 1e-12)) - 1.0
    inside = rel[reg]
    spread = MAD_TO_SD * float(np.median(np.abs(inside - np.median(inside))))
    threshold = max(rater.k_noise * spread, rater.min_contrast) * float(np.exp(rng.normal(0.0, rater.threshold_jitter)))
    # Perceptual noise at the reading scale, scaled to the slice's own spread (unit SD after smoothing).
    field = ndimage.gaussian_filter(rng.normal(size=rel.shape), max(blur, 0.5), mode="nearest")
    field *= rater.perception_noise * spread / max(float(field.std()), 1e-12)
    seen_rel = rel + field
    # Spots are judged whole, also where they leave the region: a bright patch that continues into the
    # ventricle or a sulcus outside the region is one wide structure, not a PVS at the region's edge.
    lab, n = components_2d(seen_rel > threshold)
    if n == 0:
        return 0
    idx = np.arange(1, n + 1)
    peak_at = ndimage.maximum_position(seen_rel, lab, idx)
    in_region = np.array([reg[p] for p in peak_at], dtype=bool)
    area = ndimage.sum_labels(np.ones_like(lab), lab, idx) * pixel_mm ** 2
    # width = diameter of the largest inscribed disc (2 x max distance to the spot's edge)
    dist = ndimage.distance_transform_edt(lab > 0)
    width = 2.0 * ndimage.maximum(dist, lab, idx) * pixel_mm - pixel_mm
    return int(np.sum(in_region & (area >= rater.min_area_mm2) & (width <= rater.max_width_mm)))


def simulate_rater_counts(rng: np.random.Generator, image: np.ndarray, region: np.ndarray, slice_index: int,
                          pixel_mm: float, raters: tuple[RaterModel, ...] = DEFAULT_RATERS) -> dict[str, int]:
    """Counts of each rater on one rating slice of the acquired `image` (z, y, x) inside `region`."""
    return {r.name: rater_count(rng, image[slice_index], region[slice_index], pixel_mm, r) for r in raters}


def rate_subject(rng: np.random.Generator, image: np.ndarray, regions: dict[str, np.ndarray],
                 rating_slices: dict[str, int], pixel_mm: float,
                 raters: tuple[RaterModel, ...] = DEFAULT_RATERS) -> dict[str, dict[str, int]]:
    """rater -> region -> count for one subject; BG first, then CSO (the order fixes the random stream)."""
    per_region = {r: simulate_rater_counts(rng, image, regions[r], rating_slices[r], pixel_mm, raters)
                  for r in ("BG", "CSO")}
    return {rater.name: {r: per_region[r][rater.name] for r in ("BG", "CSO")} for rater in raters}


def raters_as_dict(raters: tuple[RaterModel, ...] = DEFAULT_RATERS) -> list[dict]:
    return [asdict(r) for r in raters]
