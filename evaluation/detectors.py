"""Non-learned PVS detectors and their calibration (issue 23): local-contrast threshold and Frangi vesselness.

Both work slice by slice in the axial plane (2 mm slices, sub-millimetre pixels: a 3D Hessian on such
anisotropic voxels is mostly the through-plane spacing), inside a brain mask made from the image itself:
- local contrast: `rel = gauss(img, 0.5 mm) / median_8mm(gauss(img)) - 1` (the simulated raters' reading,
  raters.py): bright dots and lines relative to their surroundings, independent of the smooth bias field;
- Frangi: `skimage.filters.frangi(black_ridges=False)` (bright tubes) on the slice divided by its local
  background, at sigmas given in mm (Ballerini et al. 2018 used Frangi with a tuned threshold for PVS).
A detector's parameters (threshold; for Frangi also the sigma range) are chosen on training subjects only
(`tune`), by the pooled voxel Dice over those subjects, and then applied unchanged to test subjects.
`oracle_threshold` is the ceiling of thresholding: the best threshold per subject against its own truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FRANGI_SIGMA_SETS_MM: tuple[tuple[float, ...], ...] = ((0.4, 0.7), (0.4, 0.7, 1.0), (0.6, 1.0, 1.5), (0.4, 0.7, 1.0, 1.5))
N_THRESHOLDS = 200


def brain_mask(image: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Brain (plus CSF) from the image alone: in-plane smoothed image above half the median tissue
    intensity (skull and air are dark), holes filled per slice, the largest 3D component, eroded by 2 mm
    in-plane (so the edge of the head is not a bright 'line')."""
    sm = ndimage.gaussian_filter(image.astype(np.float32), (0, 1.5 / spacing_zyx[1], 1.5 / spacing_zyx[2]))
    tissue = sm[sm > 0.1 * float(sm.max())]
    fg = sm > 0.5 * float(np.median(tissue))
    fg = np.stack([ndimage.binary_fill_holes(s) for s in fg])
    lab, n = ndimage.label(fg)
    if n > 1:
        fg = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    r = max(1, int(round(2.0 / spacing_zyx[1])))
    return ndimage.binary_erosion(fg, structure=np.ones((1, 3, 3), bool), iterations=r, border_value=1)


def _background(sm: np.ndarray, spacing_zyx, background_mm: float) -> np.ndarray:
    w = max(3, int(round(background_mm / spacing_zyx[1])) | 1)
    return np.maximum(ndimage.median_filter(sm, size=(1, w, w)), 1e-6)


def local_contrast(image: np.ndarray, spacing_zyx, blur_mm: float = 0.5, background_mm: float = 8.0) -> np.ndarray:
    """Relative contrast of every voxel to its in-plane local background (raters.py steps 1-2)."""
    sm = ndimage.gaussian_filter(image.astype(np.float32), (0, blur_mm / spacing_zyx[1], blur_mm / spacing_zyx[2]))
    return sm / _background(sm, spacing_zyx, background_mm) - 1.0


def frangi_response(image: np.ndarray, spacing_zyx, sigmas_mm: tuple[float, ...],
                    background_mm: float = 8.0) -> np.ndarray:
    """Slice-wise Frangi vesselness for bright tubes on the background-normalised image."""
    from skimage.filters import frangi

    img = image.astype(np.float32)
    norm = img / _background(img, spacing_zyx, background_mm)
    sig = [s / spacing_zyx[1] for s in sigmas_mm]
    return np.stack([frangi(s, sigmas=sig, black_ridges=False) for s in norm]).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def _threshold_grid(values: list[np.ndarray]) -> np.ndarray:
    v = np.concatenate([x.ravel() for x in values])
    return np.unique(np.quantile(v, np.linspace(0.90, 0.99995, N_THRESHOLDS)))


def _counts(score: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(true positives, positives) at every threshold (score >= t) and the truth size, by sorting once."""
    order = np.sort(score, axis=None)
    pos = score.size - np.searchsorted(order, thresholds, side="left")
    t_sorted = np.sort(score[truth])
    tp = t_sorted.size - np.searchsorted(t_sorted, thresholds, side="left")
    return tp, pos, int(truth.sum())


def oracle_threshold(score: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Best Dice over thresholds of `score` inside `mask` against `truth` (whole volume), and that threshold."""
    s = np.where(mask, score, -np.inf)
    th = _threshold_grid([score[mask]])
    tp, pos, n = _counts(s, truth.astype(bool), th)
    d = 2 * tp / np.maximum(pos + n, 1)
    i = int(np.argmax(d))
    return float(d[i]), float(th[i])


@dataclass
class TunedDetector:
    """A detector with the parameters chosen on training subjects."""
    kind: str  # "local_contrast" or "frangi"
    threshold: float
    sigmas_mm: tuple[float, ...] = ()
    train_dice: float = float("nan")  # pooled Dice on the training subjects it was tuned on

    def score(self, image: np.ndarray, spacing_zyx) -> np.ndarray:
        if self.kind == "frangi":
            return frangi_response(image, spacing_zyx, self.sigmas_mm)
        return local_contrast(image, spacing_zyx)

    def predict(self, image: np.ndarray, spacing_zyx) -> np.ndarray:
        mask = brain_mask(image, spacing_zyx)
        return ((self.score(image, spacing_zyx) >= self.threshold) & mask).astype(np.uint8)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "threshold": self.threshold, "sigmas_mm": list(self.sigmas_mm),
                "train_pooled_dice": round(self.train_dice, 5)}


def tune(kind: str, images: list[np.ndarray], truths: list[np.ndarray], spacing_zyx,
         sigma_sets: tuple[tuple[float, ...], ...] = FRANGI_SIGMA_SETS_MM) -> TunedDetector:
    """Chooses the threshold (and for Frangi the sigma set) maximising the pooled Dice over the given
    (training) subjects."""
    if not images:
        raise ValueError("tune: no training subjects")
    masks = [brain_mask(im, spacing_zyx) for im in images]
    best: TunedDetector | None = None
    for sigmas in (sigma_sets if kind == "frangi" else ((),)):
        det = TunedDetector(kind, 0.0, tuple(sigmas))
        scores = [np.where(m, det.score(im, spacing_zyx), -np.inf) for im, m in zip(images, masks)]
        th = _threshold_grid([s[m] for s, m in zip(scores, masks)])
        tp = np.zeros(len(th))
        den = np.zeros(len(th))
        for s, t in zip(scores, truths):
            a, p, n = _counts(s, t.astype(bool), th)
            tp += a
            den += p + n
        d = 2 * tp / np.maximum(den, 1)
        i = int(np.argmax(d))
        if best is None or d[i] > best.train_dice:
            best = TunedDetector(kind, float(th[i]), tuple(sigmas), float(d[i]))
    return best
