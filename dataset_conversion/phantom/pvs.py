"""Perivascular spaces: thin fluid-filled tubes in the basal ganglia (BG) and centrum semiovale (CSO).

Sources of the numbers (docs/phantom.md): STRIVE / STRIVE-2 (Wardlaw et al. 2013, Duering et al. 2023:
PVS < 3 mm wide, linear along the vessel, CSF-like signal); PVSDRO (Bernal et al. 2022: cylinders,
length > width, long axis radial towards the brain centre, placed without overlap in WM and deep GM).
BG PVS follow the lenticulostriate arteries (inferior-superior, fanning out laterally as they rise,
clustered in the lentiform/caudate region near the anterior commissure); CSO PVS follow the medullary
arteries (radial, perpendicular to the cortex; lines on axial slices).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import CORTEX, DEEP_GM, WM, Contrast
from .scene import Scene, bend_polyline


@dataclass
class PVSParams:
    """Shape/signal distributions (lognormal medians and log-SDs; clipped to the given ranges)."""

    bg_length_median: float = 5.0
    bg_length_range: tuple[float, float] = (2.0, 12.0)
    bg_width_median: float = 1.1
    bg_width_range: tuple[float, float] = (0.5, 2.8)
    cso_length_median: float = 8.0
    cso_length_range: tuple[float, float] = (2.0, 20.0)
    cso_width_median: float = 0.9
    cso_width_range: tuple[float, float] = (0.5, 2.5)
    log_sd_length: float = 0.5
    log_sd_width: float = 0.35
    faint_fraction: float = 0.2  # share of PVS with low fluid signal (the ones raters and models miss)
    broken_fraction: float = 0.15  # share with a low-signal stretch along the course (label stays whole)
    cso_vertical_tilt: float = 0.25  # SD of the through-plane slope of CSO PVS (mostly in-plane: lines on axials)


@dataclass
class PVSRecord:
    region: str  # "BG" or "CSO"
    points: np.ndarray  # polyline (K, 3) mm
    width_mm: float
    length_mm: float
    signal: float  # mean relative fluid signal (0 = tissue, 1 = CSF)
    faint: bool
    broken: bool
    seeded_at_confounder: bool | None = None  # hard profile: placed next to a WMH/lacune (may overlap it)

    def as_dict(self) -> dict:
        d = {"region": self.region, "start_mm": np.round(self.points[0], 2).tolist(),
             "end_mm": np.round(self.points[-1], 2).tolist(), "width_mm": round(self.width_mm, 3),
             "length_mm": round(self.length_mm, 3), "signal": round(self.signal, 3), "faint": self.faint,
             "broken": self.broken}
        if self.seeded_at_confounder is not None:
            d["seeded_at_confounder"] = self.seeded_at_confounder
        return d


def _lognormal(rng: np.random.Generator, median: float, log_sd: float, lo: float, hi: float) -> float:
    return float(np.clip(median * np.exp(rng.normal(0, log_sd)), lo, hi))


def _signal_profile(rng: np.random.Generator, params: PVSParams) -> tuple[np.ndarray, bool, bool]:
    """Relative fluid signal at 9 equidistant points along the course."""
    faint = rng.random() < params.faint_fraction
    level = rng.uniform(0.3, 0.55) if faint else rng.uniform(0.7, 1.0)
    ctrl = np.clip(level * np.exp(rng.normal(0, 0.12, 9)), 0.05, 1.0)  # signal varies along the course
    broken = rng.random() < params.broken_fraction
    if broken:
        k = rng.integers(2, 7)
        ctrl[k: k + 2] = rng.uniform(0.05, 0.2)
    return ctrl, faint, broken


def place_pvs(scene: Scene, rng: np.random.Generator, region: str, n_target: int, candidates: np.ndarray,
              weights: np.ndarray, direction_fn, params: PVSParams, contrast: Contrast,
              allowed_codes: tuple[int, ...], max_tries_factor: int = 6, hard=None,
              at_confounder: bool = False) -> list[PVSRecord]:
    """Places up to `n_target` PVS of `region`, centred on random candidate voxels (N, 3 indices).

    A PVS is kept only if its whole course lies in allowed tissue and it shares no output voxel with
    an already placed PVS or confounder (rejection sampling, like PVSDRO's non-overlap rule).
    Hard profile (`hard` = `hard.HardParams`): a share of PVS is enlarged (2-4 mm wide), and with
    `at_confounder` the candidates lie next to a WMH or lacune and overlap with confounders is allowed.
    """
    out: list[PVSRecord] = []
    if n_target <= 0 or len(candidates) == 0:
        return out
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    g = scene.grid
    sp = np.asarray(g.spacing)
    tries = 0
    while len(out) < n_target and tries < n_target * max_tries_factor:
        tries += 1
        vox = candidates[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(candidates) - 1)]
        centre = g.origin + (vox + rng.uniform(-0.5, 0.5, 3)) * sp
        if region == "BG":
            length = _lognormal(rng, params.bg_length_median, params.log_sd_length, *params.bg_length_range)
            width = _lognormal(rng, params.bg_width_median, params.log_sd_width, *params.bg_width_range)
        else:
            length = _lognormal(rng, params.cso_length_median, params.log_sd_length, *params.cso_length_range)
            width = _lognormal(rng, params.cso_width_median, params.log_sd_width, *params.cso_width_range)
        if hard is not None and rng.random() < hard.enlarged_fraction:
            width = float(rng.uniform(*hard.enlarged_width_mm))
        d = direction_fn(centre, rng)
        start = centre - d * length / 2
        pts = bend_polyline(start, d, length, n_seg=3, bend_deg=8.0, rng=rng)
        # the whole course (sampled every ~0.5 mm) must lie in allowed tissue
        ts = np.linspace(0, 1, max(int(length / 0.5), 4))
        seg = np.minimum((ts * (len(pts) - 1)).astype(int), len(pts) - 2)
        frac = ts * (len(pts) - 1) - seg
        course = pts[seg] + (pts[seg + 1] - pts[seg]) * frac[:, None]
        if not np.all(np.isin(scene.code_at(course), allowed_codes)):
            continue
        if scene.occupied(course, pvs_only=at_confounder):  # cheap necessary condition of render()'s test
            continue
        ctrl, faint, broken = _signal_profile(rng, params)
        r = width / 2
        pad = r + 2 * max(g.spacing)
        fn = scene.tube_field(pts, r, ctrl, base=contrast.wm, top=contrast.csf)
        if scene.render("pvs", pts.min(0) - pad, pts.max(0) + pad, fn, check_free=True,
                        overlap_confounders=at_confounder):
            out.append(PVSRecord(region=region, points=pts, width_mm=width, length_mm=length,
                                 signal=float(ctrl.mean()), faint=bool(faint), broken=bool(broken),
                                 seeded_at_confounder=None if hard is None else bool(at_confounder)))
    return out


def bg_direction_fn(midline_x: float):
    """Lenticulostriate course: inferior-superior, tilted 5-25 degrees laterally (they fan out)."""

    def fn(centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        tilt = np.deg2rad(rng.uniform(5, 25))
        side = 1.0 if centre[2] >= midline_x else -1.0
        d = np.array([np.cos(tilt), rng.normal(0, 0.15), side * np.sin(tilt)])
        return d / np.linalg.norm(d)

    return fn


def cso_direction_fn(inward_axial, tilt_sd: float):
    """Medullary course: radial within the axial plane (perpendicular to the cortex of the slice's
    cross-section), with a small random through-plane slope."""

    def fn(centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d = inward_axial(centre).copy()
        d[0] = rng.normal(0, tilt_sd)
        d[1:] += rng.normal(0, 0.15, 2)
        return d / np.linalg.norm(d)

    return fn


TISSUE_FOR_REGION = {"BG": (DEEP_GM, WM), "CSO": (WM, CORTEX)}
