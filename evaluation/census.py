"""Per-PVS census: one row per 3D PVS component of a mask, plus per-subject totals.

What each column means (arrays in SimpleITK numpy order z, y, x; physical space = ITK's LPS millimetres):
    * id: the component's label in the labelled-component image (`ndimage.label` raster order, 1..n),
      3D connectivity 26 by default, the same rule as the lesion-wise metrics (`metrics.label_components`);
    * region: "BG", "CSO", "other_WM" or "elsewhere", by majority of the component's voxels
      (BG and CSO first, then the white-matter mask outside them, then the rest; a tie goes to the earlier
      name in that order);
    * hemisphere: "left" / "right" by majority of the hemisphere map (1 left, 2 right), "outside" when most
      voxels fall on 0 (ties: left, right, outside), "unknown" without a map;
    * volume_mm3: voxel count x voxel volume;
    * length_mm, width_mm, min_width_mm: extents along the principal axes of the component's physical voxel
      centres (eigenvectors of their covariance), each = range of the centres' projections + the voxel's own
      extent along that axis (so a single 0.5 x 0.5 x 2 mm voxel is 2 mm long, not 0). length is along the
      first axis; width_mm the larger, min_width_mm the smaller extent across it. A PVS that runs in-plane
      can look no thinner than the slice thickness across the slices: 2D acquisitions cannot resolve it;
    * orient_x/y/z: the long axis as a physical unit vector (sign chosen so that it points along the slice
      normal, or toward +x, +y when perpendicular to it); angle_to_slice_axis_deg: 0 = runs through the
      slices (perpendicular to the axial plane), 90 = lies in-plane. NaN when the long axis is undefined
      (one voxel, or no dominant axis: the top two eigenvalues within 1e-6 of each other);
    * rel_t2_wm: mean image intensity in the component / median intensity of the white-matter mask outside
      every PVS (NaN without an image or a white-matter mask).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from nnunetv2_mfns.errors import MfnsInputError

from .metrics import label_components

REGION_NAMES = ("BG", "CSO", "other_WM", "elsewhere")
HEMISPHERE_NAMES = {0: "outside", 1: "left", 2: "right"}
CENSUS_COLUMNS = ["id", "region", "hemisphere", "n_voxels", "volume_mm3", "length_mm", "width_mm", "min_width_mm",
                  "orient_x", "orient_y", "orient_z", "angle_to_slice_axis_deg", "rel_t2_wm",
                  "centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
# eigenvalues closer than this (relative) leave the long axis undefined
_TIE_RTOL = 1e-6


@dataclass
class CensusResult:
    """table: one row per component (CENSUS_COLUMNS); labels: int32 array, 0 = background, id = component;
    stats: per-subject totals (see `subject_stats`)."""
    table: pd.DataFrame
    labels: np.ndarray
    stats: dict = field(default_factory=dict)


def _check_same_shape(name: str, arr: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if arr is not None and tuple(np.shape(arr)) != tuple(shape):
        raise MfnsInputError(f"census: {name} shape {tuple(np.shape(arr))} != mask shape {tuple(shape)}")


def _region_codes(regions: dict[str, np.ndarray] | None, shape: tuple[int, ...]) -> np.ndarray:
    """One code per voxel: index into REGION_NAMES (BG and CSO override the white-matter mask)."""
    codes = np.full(shape, REGION_NAMES.index("elsewhere"), dtype=np.uint8)
    if not regions:
        return codes
    for name, code in (("WM", 2), ("CSO", 1), ("BG", 0)):  # later writes win: BG > CSO > other WM
        r = regions.get(name)
        if r is not None:
            _check_same_shape(f"region {name}", r, shape)
            codes[np.asarray(r) > 0] = code
    return codes


def _voxel_extent_along(u: np.ndarray, edges: np.ndarray) -> float:
    """Extent of one voxel (a box with the given physical edge vectors as columns) along unit vector u."""
    return float(np.abs(u @ edges).sum())


def _orient_sign(u: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Fixes the sign of an axis vector so that the same axis always gets the same vector."""
    d = float(u @ normal)
    if abs(d) > 1e-9:
        return u if d > 0 else -u
    for c in u:  # perpendicular to the normal: first non-zero of x, y, z positive
        if abs(c) > 1e-9:
            return u if c > 0 else -u
    return u


def _shape_of(coords_mm: np.ndarray, edges: np.ndarray, normal: np.ndarray) -> dict:
    """Length, widths and long-axis orientation of one component from its voxel centres (n x 3, physical)."""
    centred = coords_mm - coords_mm.mean(axis=0)
    cov = centred.T @ centred / max(len(coords_mm), 1)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    extents = []
    for k in range(3):
        u = evecs[:, k]
        proj = centred @ u
        extents.append(float(proj.max() - proj.min()) + _voxel_extent_along(u, edges))
    defined = len(coords_mm) > 1 and (evals[0] - evals[1]) > _TIE_RTOL * max(evals[0], 1e-12)
    if defined:
        u = _orient_sign(evecs[:, 0], normal)
        angle = math.degrees(math.acos(min(1.0, abs(float(u @ normal)))))
        orient = (float(u[0]), float(u[1]), float(u[2]))
    else:
        # no dominant axis: report the largest extent over the box of the voxel-grid axes instead of an
        # arbitrary eigenvector's, so a single voxel's "length" is its largest edge
        angle, orient = math.nan, (math.nan, math.nan, math.nan)
        grid_ext = []
        for a in range(3):
            u = edges[:, a] / np.linalg.norm(edges[:, a])
            proj = centred @ u
            grid_ext.append(float(proj.max() - proj.min()) + _voxel_extent_along(u, edges))
        extents = sorted(grid_ext, reverse=True)
    width, min_width = max(extents[1], extents[2]), min(extents[1], extents[2])
    return {"length_mm": extents[0], "width_mm": width, "min_width_mm": min_width, "orient_x": orient[0],
            "orient_y": orient[1], "orient_z": orient[2], "angle_to_slice_axis_deg": angle}


def pvs_census(mask: np.ndarray, spacing: tuple[float, float, float], direction: tuple[float, ...] | None = None,
               image: np.ndarray | None = None, regions: dict[str, np.ndarray] | None = None,
               hemisphere: np.ndarray | None = None, connectivity: int = 26,
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> CensusResult:
    """Census of the 3D PVS components of a binary mask (z, y, x).

    spacing, origin: ITK order (x, y, z) in mm; direction: ITK's 9-value direction (identity when None).
    image: the T2w array for the relative signal; regions: {"BG", "CSO", "WM", ...} masks (non-zero = inside);
    hemisphere: 0 outside, 1 left, 2 right. All arrays must have the mask's shape.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise MfnsInputError(f"census: mask must be 3D, got {mask.ndim}D")
    shape = mask.shape
    _check_same_shape("image", image, shape)
    _check_same_shape("hemisphere map", hemisphere, shape)
    sp = np.asarray(spacing, dtype=float)
    if sp.shape != (3,) or np.any(sp <= 0):
        raise MfnsInputError(f"census: spacing must be 3 positive numbers, got {tuple(spacing)}")
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    edges = d * sp[None, :]  # column a: physical vector of one step along ITK axis a
    normal = d[:, 2] / np.linalg.norm(d[:, 2])
    voxel_volume = float(np.prod(sp))

    labels, n = label_components(mask > 0, connectivity)
    codes = _region_codes(regions, shape)
    wm_ref = math.nan
    if image is not None and regions and regions.get("WM") is not None:
        wm = (np.asarray(regions["WM"]) > 0) & (mask == 0)
        if wm.any():
            wm_ref = float(np.median(np.asarray(image, dtype=np.float64)[wm]))
    rows = []
    for lab_id, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        sub = labels[sl] == lab_id
        idx_zyx = np.argwhere(sub) + np.array([s.start for s in sl])
        ijk = idx_zyx[:, ::-1].astype(float)  # ITK index order (x, y, z)
        coords = ijk @ edges.T + np.asarray(origin, dtype=float)
        row = {"id": lab_id, "n_voxels": int(len(idx_zyx)), "volume_mm3": len(idx_zyx) * voxel_volume}
        c = np.bincount(codes[sl][sub], minlength=len(REGION_NAMES))
        row["region"] = REGION_NAMES[int(np.argmax(c))]
        if hemisphere is None:
            row["hemisphere"] = "unknown"
        else:
            h = np.bincount(np.asarray(hemisphere)[sl][sub].astype(np.int64).clip(0, 2), minlength=3)
            order = [1, 2, 0]  # majority; ties go to left, then right, then outside
            row["hemisphere"] = HEMISPHERE_NAMES[order[int(np.argmax(h[order]))]]
        row.update(_shape_of(coords, edges, normal))
        if image is not None and not math.isnan(wm_ref) and wm_ref != 0:
            row["rel_t2_wm"] = float(np.asarray(image)[sl][sub].mean()) / wm_ref
        else:
            row["rel_t2_wm"] = math.nan
        centroid = coords.mean(axis=0)
        row.update(centroid_x_mm=float(centroid[0]), centroid_y_mm=float(centroid[1]), centroid_z_mm=float(centroid[2]))
        rows.append(row)
    table = pd.DataFrame(rows, columns=CENSUS_COLUMNS)
    stats = subject_stats(table)
    stats["wm_reference_signal"] = wm_ref
    return CensusResult(table=table, labels=labels.astype(np.int32, copy=False), stats=stats)


def subject_stats(table: pd.DataFrame) -> dict:
    """Per-subject totals of a census table: count and volume overall, per region and per hemisphere,
    median length and width (NaN when there is no PVS)."""
    out: dict = {"n_pvs": int(len(table)), "total_volume_mm3": float(table["volume_mm3"].sum())}
    for r in REGION_NAMES:
        sel = table[table["region"] == r]
        out[f"n_{r}"] = int(len(sel))
        out[f"volume_mm3_{r}"] = float(sel["volume_mm3"].sum())
    for h in ("left", "right", "outside", "unknown"):
        sel = table[table["hemisphere"] == h]
        out[f"n_{h}"] = int(len(sel))
        out[f"volume_mm3_{h}"] = float(sel["volume_mm3"].sum())
    out["median_length_mm"] = float(table["length_mm"].median()) if len(table) else math.nan
    out["median_width_mm"] = float(table["width_mm"].median()) if len(table) else math.nan
    return out
