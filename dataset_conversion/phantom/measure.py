"""Shape measurements of a PVS label, in mm (used by the tests, the benchmark and docs/phantom.md).

- in-plane width of every 2D component (8-connectivity) on every axial slice: sqrt(12 * smallest
  principal variance + pixel^2) -- exact for a straight band of uniform width, ~0.87 x diameter for
  a disc (a PVS cut across);
- length of every 3D component (26-connectivity): extent of its voxel centres along the first
  principal axis plus the voxel size along that axis.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _principal(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = coords - coords.mean(0)
    cov = c.T @ c / max(len(c), 1)
    return np.linalg.eigh(cov)


def inplane_widths(label: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Widths (mm) of all 2D components of `label` (z, y, x) on all axial slices."""
    sy, sx = spacing_zyx[1], spacing_zyx[2]
    px2 = sy * sx
    out = []
    for sl in label:
        lab, n = ndimage.label(sl > 0, structure=np.ones((3, 3), bool))
        for i, sls in enumerate(ndimage.find_objects(lab), start=1):
            yy, xx = np.nonzero(lab[sls] == i)
            pts = np.stack([yy * sy, xx * sx], axis=1)
            w, _ = _principal(pts) if len(pts) > 1 else (np.zeros(2), None)
            out.append(float(np.sqrt(12.0 * max(w[0], 0.0) + px2)))
    return np.asarray(out)


def lengths_3d(label: np.ndarray, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Lengths (mm) of all 3D components (26-connectivity) of `label`."""
    sp = np.asarray(spacing_zyx, dtype=np.float64)
    lab, n = ndimage.label(label > 0, structure=np.ones((3, 3, 3), bool))
    out = []
    for i, sls in enumerate(ndimage.find_objects(lab), start=1):
        idx = np.argwhere(lab[sls] == i)
        pts = idx * sp
        if len(pts) == 1:
            out.append(float(sp.max()))
            continue
        _, vec = _principal(pts)
        v = vec[:, -1]
        proj = pts @ v
        out.append(float(proj.max() - proj.min() + np.abs(v) @ sp))
    return np.asarray(out)


def _component_variances_2d(mask2d: np.ndarray, spacing_yx: tuple[float, float]) -> list[np.ndarray]:
    """Principal variances (mm^2, ascending) of every 8-connected 2D component; zeros for a single pixel."""
    lab, _ = ndimage.label(mask2d > 0, structure=np.ones((3, 3), bool))
    out = []
    for i, sls in enumerate(ndimage.find_objects(lab), start=1):
        yy, xx = np.nonzero(lab[sls] == i)
        pts = np.stack([yy * spacing_yx[0], xx * spacing_yx[1]], axis=1)
        out.append(_principal(pts)[0] if len(pts) > 1 else np.zeros(2))
    return out


def elongation_2d(mask2d: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Major/minor in-plane extent ratio of every 2D component (1 = dot, >> 1 = line)."""
    px2 = spacing_yx[0] * spacing_yx[1]
    return np.asarray([float(np.sqrt((12 * max(w[1], 0) + px2) / (12 * max(w[0], 0) + px2)))
                       for w in _component_variances_2d(mask2d, spacing_yx)])


def inplane_lengths(mask2d: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """In-plane length (mm) of every 2D component: sqrt(12 * largest principal variance + pixel^2),
    exact for a straight band (the long extent of a PVS seen as a line on an axial slice)."""
    px2 = spacing_yx[0] * spacing_yx[1]
    return np.asarray([float(np.sqrt(12.0 * max(w[-1], 0.0) + px2))
                       for w in _component_variances_2d(mask2d, spacing_yx)])
