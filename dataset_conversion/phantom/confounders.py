"""Unlabelled PVS mimics: the failure modes Cai et al. 2024 name.

- fine sulci reaching in from the brain surface (thin CSF clefts, connected to the subarachnoid CSF:
  PVS-like structures at the brain edge),
- lacunes (STRIVE: round/ovoid fluid cavities 3-15 mm, in BG and WM),
- white-matter hyperintensities (bright, but less than CSF: PVSDRO 657 vs CSF 1152; periventricular
  caps/bands and deep punctate foci, fuzzy borders),
- slightly hyperintense non-PVS voxels (small foci 6-15 % above WM).
All are rendered before the PVS; PVS are then never placed on a voxel they touch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import CORTEX, CSF, DEEP_GM, WM, Contrast
from .scene import Scene, bend_polyline


@dataclass
class ConfounderRecord:
    kind: str
    centre_mm: list
    size_mm: float

    def as_dict(self) -> dict:
        return {"kind": self.kind, "centre_mm": [round(float(v), 2) for v in self.centre_mm],
                "size_mm": round(float(self.size_mm), 3)}


def _orthonormal(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    return q.T


def _pick(rng: np.random.Generator, cand: np.ndarray, n: int) -> np.ndarray:
    if len(cand) == 0 or n <= 0:
        return np.zeros((0, 3), int)
    return cand[rng.integers(0, len(cand), n)]


def place_confounders(scene: Scene, rng: np.random.Generator, atrophy: float, contrast: Contrast,
                      inward_grid, periventricular: np.ndarray, hard=None,
                      hard_rng: np.random.Generator | None = None) -> list[ConfounderRecord]:
    """Draws and renders all confounders of one subject; counts grow with `atrophy` (i.e. with age).

    `hard` (a `hard.HardParams`, hard profile only): small lacunes (overlapping the enlarged-PVS sizes),
    more of them, and flow voids (drawn from `hard_rng` after everything else)."""
    g = scene.grid
    sp = np.asarray(g.spacing)
    codes = scene.codes
    recs: list[ConfounderRecord] = []
    a = float(np.clip(atrophy, 0, 1))

    def to_mm(vox: np.ndarray) -> np.ndarray:
        return g.origin + (vox + rng.uniform(-0.5, 0.5, 3)) * sp

    # --- fine sulci: clefts perpendicular to the surface, starting in the subarachnoid CSF --------
    surface = np.argwhere((codes == CORTEX) & _touches(codes, CSF))
    for vox in _pick(rng, surface, int(rng.poisson(30 + 60 * a))):
        start = to_mm(vox)
        d = inward_grid(start)
        start = start - d * 1.0  # begin outside the cortex so the cleft connects to surface CSF
        length = rng.uniform(3.0, 8.0) + 5.0 * a
        width = rng.uniform(0.6, 1.6)
        pts = bend_polyline(start, d, length, n_seg=2, bend_deg=10.0, rng=rng)
        ctrl = np.clip(rng.uniform(0.75, 1.0) * np.linspace(1.0, rng.uniform(0.5, 0.9), 5), 0, 1)
        fn = scene.tube_field(pts, width / 2, ctrl, base=contrast.cortex, top=contrast.csf)
        pad = width / 2 + 2 * max(g.spacing)
        if scene.render("sulcus", pts.min(0) - pad, pts.max(0) + pad, fn, check_free=False):
            recs.append(ConfounderRecord("sulcus", pts[0].tolist(), length))

    # --- lacunes: ovoid fluid cavities 3-15 mm in deep GM and WM ----------------------------------
    deep_or_wm = np.argwhere(np.isin(codes, (DEEP_GM, WM)))
    n_lacunes = rng.poisson(0.3 + 3.0 * a * a) if hard is None else \
        rng.poisson(hard.lacune_count[0] + hard.lacune_count[1] * a * a)
    for vox in _pick(rng, deep_or_wm, int(n_lacunes)):
        c = to_mm(vox)
        major = rng.uniform(3.0, 15.0) if hard is None else rng.uniform(*hard.lacune_major_mm)
        semi = np.array([major, major * rng.uniform(0.5, 0.85), major * rng.uniform(0.5, 0.85)]) / 2
        value = contrast.wm + rng.uniform(0.8, 0.95) * (contrast.csf - contrast.wm)
        fn = scene.ellipsoid_field(c, _orthonormal(rng), semi, value)
        pad = semi.max() + 2 * max(g.spacing)
        if scene.render("lacune", c - pad, c + pad, fn, check_free=False):
            recs.append(ConfounderRecord("lacune", c.tolist(), major))

    # --- WMH: periventricular caps/bands + deep punctate foci, fuzzy border -----------------------
    n_pv = int(rng.poisson(1 + 8 * a * a))
    n_deep = int(rng.poisson(1 + 10 * a * a))
    for kind, vox_list, size_rng in (("wmh_periventricular", _pick(rng, periventricular, n_pv), (6.0, 20.0)),
                                     ("wmh_deep", _pick(rng, np.argwhere(codes == WM), n_deep), (2.0, 8.0))):
        for vox in vox_list:
            c = to_mm(vox)
            size = rng.uniform(*size_rng)
            semi = np.array([size, size * rng.uniform(0.4, 0.8), size * rng.uniform(0.4, 0.8)]) / 2
            value = contrast.wmh * rng.uniform(0.85, 1.15)
            fn = scene.ellipsoid_field(c, _orthonormal(rng), semi, value, edge=max(1.5, size / 4))
            pad = semi.max() + size / 4 + 2 * max(g.spacing)
            if scene.render(kind, c - pad, c + pad, fn, check_free=False):
                recs.append(ConfounderRecord(kind, c.tolist(), size))

    # --- slightly hyperintense non-PVS foci (6-15 % above WM), 1-4 mm ------------------------------
    for vox in _pick(rng, deep_or_wm, int(rng.poisson(25 + 30 * a))):
        c = to_mm(vox)
        size = rng.uniform(1.0, 4.0)
        semi = np.array([size, size * rng.uniform(0.5, 1.0), size * rng.uniform(0.5, 1.0)]) / 2
        value = contrast.wm * rng.uniform(1.06, 1.15)
        fn = scene.ellipsoid_field(c, _orthonormal(rng), semi, value, edge=1.0)
        pad = semi.max() + 2 * max(g.spacing)
        if scene.render("hyperintense_focus", c - pad, c + pad, fn, check_free=False):
            recs.append(ConfounderRecord("hyperintense_focus", c.tolist(), size))
    if hard is not None:
        recs += _flow_voids(scene, hard_rng, hard, contrast, inward_grid, surface)
    return recs


def _flow_voids(scene: Scene, rng: np.random.Generator, hard, contrast: Contrast, inward_grid,
                surface: np.ndarray) -> list[ConfounderRecord]:
    """Dark tubes of fast-flowing blood: cortical/sulcal vessels running along the brain surface in the
    subarachnoid CSF, and thin deep perforating vessels rising through the basal ganglia (where a dark
    line next to bright PVS fluid makes a bright-dark-bright pattern)."""
    g = scene.grid
    recs: list[ConfounderRecord] = []
    value = hard.flow_void_signal * contrast.wm
    deep = np.argwhere(scene.codes == DEEP_GM)
    jobs = [("surface", v) for v in _pick(rng, surface, int(rng.poisson(hard.flow_void_surface)))]
    jobs += [("deep", v) for v in _pick(rng, deep, int(rng.poisson(hard.flow_void_deep)))]
    for where, vox in jobs:
        c = g.origin + (vox + rng.uniform(-0.5, 0.5, 3)) * np.asarray(g.spacing)
        if where == "surface":
            n = inward_grid(c)
            c = c - n * 1.0  # in the CSF just outside the cortex
            t = np.cross(n, rng.standard_normal(3))  # tangential to the surface
            width, length = rng.uniform(*hard.flow_void_surface_width_mm), rng.uniform(10.0, 30.0)
        else:
            t = np.array([1.0, rng.normal(0, 0.2), rng.normal(0, 0.3)])  # rising through the BG
            width, length = rng.uniform(*hard.flow_void_deep_width_mm), rng.uniform(6.0, 15.0)
        t = t / max(np.linalg.norm(t), 1e-9)
        pts = bend_polyline(c - t * length / 2, t, length, n_seg=3, bend_deg=12.0, rng=rng)
        fn = scene.tube_field(pts, width / 2, np.zeros(5), base=value, top=value)
        pad = width / 2 + 2 * max(g.spacing)
        if scene.render("flow_void", pts.min(0) - pad, pts.max(0) + pad, fn, check_free=False):
            recs.append(ConfounderRecord("flow_void", pts[0].tolist(), length))
    return recs


def _touches(codes: np.ndarray, code: int) -> np.ndarray:
    """In-plane 4-neighbourhood contains `code`."""
    m = codes == code
    out = np.zeros_like(m)
    out[:, 1:, :] |= m[:, :-1, :]
    out[:, :-1, :] |= m[:, 1:, :]
    out[:, :, 1:] |= m[:, :, :-1]
    out[:, :, :-1] |= m[:, :, 1:]
    return out
