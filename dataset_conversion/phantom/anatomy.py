"""Brain anatomy of the PVS phantom: MNI152 2009 tissue maps, per-subject deformation and atrophy.

Conventions used throughout the phantom: arrays are ordered (z, y, x) = (inferior->superior,
posterior->anterior, left->right), physical points are millimetres in that same order in an MNI-like
space (RAS axes; the writer flips to ITK's LPS). The template is nilearn's packaged MNI152 2009 (1 mm)
T1/GM/WM/brain mask, which ships inside the nilearn wheel (no download).

Heuristics (documented in docs/phantom.md):
- CSF = 1 - GM - WM inside the brain mask.
- Ventricles = CSF > 0.4 with |x| < 30 mm, -50 < y < 40 mm, -8 < z < 45 mm, at least 12 mm from the
  brain-mask edge, components > 500 voxels, minus the midline band |x| < 4 mm above z = 22 mm (that is
  the callosal sulcus / interhemispheric fissure, not ventricle) and minus y < -28 mm below z = 6 mm
  (quadrigeminal/ambient cisterns).
- Deep grey matter (basal ganglia + thalamus) = GM > 0.3 (the nuclei are partial-volume grey in the
  MNI GM map) and CSF < 0.5 with |x| <= 33 mm (the insula lies lateral to it), > 20 mm from the
  brain-mask edge (cortex is superficial), -12 < z < 24 mm, -38 < y < 32 mm, components > 200 voxels.
- BG rating region = per axial slice and hemisphere the convex hull of the deep GM (caudate,
  lentiform nucleus, thalamus and the internal capsule between them), minus ventricles, > 12 mm deep.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# MNI coordinates (x, y, z) of the anterior commissure in MNI152 space (Lancaster et al. 2007 give
# approximately (0, 2, -4)); stored here in the phantom's (z, y, x) order.
AC_MNI_ZYX = np.array([-4.0, 2.0, 0.0])
# centre used for rotations/scalings: roughly the centre of the cerebrum
BRAIN_CENTRE_ZYX = np.array([8.0, -18.0, 0.0])

# tissue codes of the label map used for seeding and region masks (not written as labels)
BACKGROUND, CSF, VENTRICLE, CORTEX, DEEP_GM, WM, SKULL, SCALP = 0, 1, 2, 3, 4, 5, 6, 7


@dataclass(frozen=True)
class Template:
    """Cropped MNI152 template in (z, y, x) order, 1 mm voxels; `origin` is the mm position of index 0."""

    origin: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray
    deep: np.ndarray  # smooth 0..1 weight: share of GM that is deep grey matter
    ventricles: np.ndarray
    bg_region: np.ndarray
    d_in: np.ndarray  # mm from inside voxels to the brain-mask edge
    d_out: np.ndarray  # mm from outside voxels to the brain mask
    d_vent: np.ndarray  # mm to the ventricle mask

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.gm.shape

    def mm_to_index(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) mm -> (3, N) fractional template indices (template spacing is 1 mm)."""
        return (np.asarray(pts, dtype=np.float64) - self.origin).T

    def index_to_mm(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(idx, dtype=np.float64) + self.origin


def _nilearn_zyx(loader) -> tuple[np.ndarray, np.ndarray]:
    img = loader(resolution=1)
    aff = img.affine
    if not np.allclose(np.abs(np.diag(aff)[:3]), 1.0) or not np.allclose(aff[:3, :3], np.diag(np.diag(aff)[:3])):
        raise RuntimeError("unexpected MNI152 template affine from nilearn: %s" % aff.tolist())
    data = np.asarray(img.dataobj, dtype=np.float32)
    if hasattr(img, "dataobj") and np.issubdtype(img.get_data_dtype(), np.integer) and data.max() > 1.5:
        data = data / 255.0  # nilearn stores the maps as uint8 scaled 0..255 in some versions
    origin_xyz = aff[:3, 3]
    return np.ascontiguousarray(data.transpose(2, 1, 0)), origin_xyz[::-1].copy()


@functools.lru_cache(maxsize=1)
def load_template(margin_mm: int = 18) -> Template:
    """Loads nilearn's MNI152 2009 maps (offline) and derives ventricles, deep GM and the BG region.

    Cached per process: this is the one-off cost (~5 s) of a cohort, not of a subject.
    """
    from nilearn import datasets  # imported lazily: nilearn is slow to import

    gm, origin = _nilearn_zyx(datasets.load_mni152_gm_template)
    wm, _ = _nilearn_zyx(datasets.load_mni152_wm_template)
    mask_f, _ = _nilearn_zyx(datasets.load_mni152_brain_mask)
    mask = mask_f > 0.5
    # crop to the brain plus a margin for the synthetic head layers and for the deformation
    nz = np.argwhere(mask)
    lo = np.maximum(nz.min(0) - margin_mm, 0)
    hi = np.minimum(nz.max(0) + margin_mm + 1, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    gm, wm, mask = gm[sl], wm[sl], mask[sl]
    origin = origin + lo
    gm = np.where(mask, gm, 0).astype(np.float32)
    wm = np.where(mask, wm, 0).astype(np.float32)
    tot = gm + wm
    over = tot > 1
    gm[over] /= tot[over]
    wm[over] /= tot[over]
    csf = np.where(mask, 1.0 - gm - wm, 0).astype(np.float32)

    z, y, x = np.meshgrid(*[origin[i] + np.arange(gm.shape[i]) for i in range(3)], indexing="ij", sparse=True)
    d_in = ndimage.distance_transform_edt(mask).astype(np.float32)
    d_out = ndimage.distance_transform_edt(~mask).astype(np.float32)

    vent = (csf > 0.4) & (np.abs(x) < 30) & (y > -50) & (y < 40) & (z > -8) & (z < 45) & (d_in > 12)
    vent &= ~((np.abs(x) < 4) & (z > 22))
    vent &= ~((y < -28) & (z < 6))  # quadrigeminal/ambient cisterns, not ventricles
    vent = _keep_large(vent, 500)
    d_vent = ndimage.distance_transform_edt(~vent).astype(np.float32)

    # deep GM: in the MNI GM map the basal ganglia are partial-volume grey (GM ~0.3-0.6, WM ~0.3-0.5)
    deep = (gm > 0.3) & (csf < 0.5) & (np.abs(x) <= 33) & (d_in > 20) & (z > -12) & (z < 24) & (y > -38) & (y < 32)
    deep = _keep_large(deep, 200)
    deep_w = np.clip(ndimage.gaussian_filter(deep.astype(np.float32), 1.0) * 1.5, 0, 1)

    # BG rating region: per axial slice and hemisphere, the convex hull of the deep GM (caudate,
    # lentiform nucleus, thalamus and the internal capsule between them), minus ventricles
    bg = np.zeros_like(mask)
    xs = x.ravel()
    for k in range(bg.shape[0]):
        for side in (xs < -2, xs > 2):
            pts = np.argwhere(deep[k][:, side])
            if len(pts) < 20:
                continue
            pts[:, 1] += np.flatnonzero(side)[0]
            bg[k] |= _hull_fill(pts, bg.shape[1:])
    bg &= ~vent & mask & (d_in > 12)
    return Template(origin=origin.astype(np.float64), gm=gm, wm=wm, csf=csf, mask=mask, deep=deep_w.astype(np.float32),
                    ventricles=vent, bg_region=bg, d_in=d_in, d_out=d_out, d_vent=d_vent)


def _hull_fill(pts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Filled convex hull of 2D integer points (scipy Delaunay point location)."""
    from scipy.spatial import Delaunay, QhullError

    out = np.zeros(shape, dtype=bool)
    lo, hi = pts.min(0), pts.max(0) + 1
    try:
        tri = Delaunay(pts)
    except QhullError:  # collinear points: no area
        return out
    gy, gx = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
    inside = tri.find_simplex(np.stack([gy.ravel(), gx.ravel()], 1)) >= 0
    out[lo[0]:hi[0], lo[1]:hi[1]] = inside.reshape(gy.shape)
    return out


def _keep_large(m: np.ndarray, min_voxels: int) -> np.ndarray:
    lab, n = ndimage.label(m)
    if n == 0:
        return m
    sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = sizes >= min_voxels
    return keep[lab]


# --------------------------------------------------------------------------------------------------
# per-subject anatomy at template resolution
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Contrast:
    """T2w tissue intensities (arbitrary units). Defaults: PVSDRO (Bernal et al. 2022) values."""

    csf: float = 1152.0
    wm: float = 395.0
    cortex: float = 450.0
    deep_gm: float = 395.0
    wmh: float = 657.0
    skull: float = 60.0
    scalp: float = 320.0


def subject_maps(tpl: Template, atrophy: float, contrast: Contrast, deep_t2: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T2 intensity, tissue-code map and lateral-ventricle mask of one subject, in template space.

    `deep_t2` (hard profile): a template-space intensity map of the deep grey matter (nucleus by nucleus)
    used instead of the single `contrast.deep_gm`.
    `atrophy` in [0, 1] widens the ventricles (up to 4 mm) and the extra-cerebral CSF / sulcal rim
    (cortex thinned by up to 2.5 mm) -- the age-related atrophy of the issue.
    """
    a = float(np.clip(atrophy, 0.0, 1.0))
    w_vent = 0.3 + 4.0 * a
    w_rim = 0.6 + 2.5 * a
    vent = np.clip(w_vent - tpl.d_vent + 0.5, 0, 1) * (tpl.d_in > 6)  # ventricles grow into WM/GM
    vent = np.maximum(vent, tpl.ventricles.astype(np.float32) * np.clip(tpl.csf * 2.5, 0, 1))
    rim = np.where(tpl.mask, np.clip(w_rim - tpl.d_in + 0.5, 0, 1), 0).astype(np.float32)
    csf = np.maximum(tpl.csf, np.maximum(vent, rim))
    tissue = tpl.gm + tpl.wm
    scale = np.where(tissue > 1e-6, (1.0 - csf) / np.maximum(tissue, 1e-6), 0).astype(np.float32)
    scale = np.minimum(scale, 1.0)
    gm = tpl.gm * scale
    wm = tpl.wm * scale
    csf = np.where(tpl.mask, 1.0 - gm - wm, 0)
    deep = gm * tpl.deep
    cortex = gm - deep
    t2 = csf * contrast.csf + cortex * contrast.cortex + deep * (contrast.deep_gm if deep_t2 is None else deep_t2) \
        + wm * contrast.wm
    # synthetic extra-cerebral layers so that the brain edge looks like a head, not a skull-stripped
    # template: a CSF rim (subarachnoid space), dark skull, intermediate scalp, air.
    d = tpl.d_out
    outside = ~tpl.mask
    t2 = np.where(outside & (d <= 1.5), contrast.csf, t2)
    t2 = np.where(outside & (d > 1.5) & (d <= 7.5), contrast.skull, t2)
    t2 = np.where(outside & (d > 7.5) & (d <= 13.0), contrast.scalp, t2)
    t2 = np.where(outside & (d > 13.0), 0.0, t2).astype(np.float32)

    codes = np.full(tpl.shape, BACKGROUND, dtype=np.uint8)
    codes[outside & (d <= 1.5)] = CSF
    codes[outside & (d > 1.5) & (d <= 7.5)] = SKULL
    codes[outside & (d > 7.5) & (d <= 13.0)] = SCALP
    # dominant tissue per voxel (pairwise running maximum: cheaper than stacking four volumes)
    brain_codes = np.full(tpl.shape, CSF, dtype=np.uint8)
    best = csf.astype(np.float32, copy=True)
    for code, frac in ((CORTEX, cortex), (DEEP_GM, deep), (WM, wm)):
        better = frac > best
        brain_codes[better] = code
        np.maximum(best, frac, out=best)
    brain_codes[(brain_codes == CSF) & (vent > 0.5)] = VENTRICLE
    codes[tpl.mask] = brain_codes[tpl.mask]
    lat_vent = (vent > 0.5) & tpl.mask
    return t2, codes, lat_vent


# --------------------------------------------------------------------------------------------------
# per-subject spatial transform
# --------------------------------------------------------------------------------------------------
@dataclass
class SubjectTransform:
    """Pull mapping subject mm -> template mm: q = M (p - c) + c + t + u(p).

    M = rotation * scaling (random affine), u = smooth random displacement (elastic deformation)
    stored on a coarse control grid and interpolated linearly.
    """

    matrix: np.ndarray
    translation: np.ndarray
    centre: np.ndarray
    grid_origin: np.ndarray
    grid_spacing: float
    disp: np.ndarray  # (3, gz, gy, gx) mm

    @classmethod
    def random(cls, rng: np.random.Generator, rot_deg: float = 6.0, scale_range: float = 0.06,
               shift_mm: float = 4.0, elastic_mm: float = 2.0, grid_spacing: float = 12.0) -> "SubjectTransform":
        angles = np.deg2rad(rng.uniform(-rot_deg, rot_deg, 3))
        # pitch (rotation about the left-right axis) is the largest head-positioning variation
        rot = _rotation(angles)
        scales = rng.uniform(1 - scale_range, 1 + scale_range, 3)
        matrix = rot @ np.diag(1.0 / scales)
        translation = rng.uniform(-shift_mm, shift_mm, 3)
        lo = np.array([-110.0, -140.0, -110.0])
        shape = tuple(int(np.ceil(250 / grid_spacing)) + 1 for _ in range(3))
        disp = rng.standard_normal((3,) + shape)
        disp = np.stack([ndimage.gaussian_filter(d, 1.0, mode="nearest") for d in disp])
        disp *= elastic_mm / max(float(disp.std()), 1e-9)
        return cls(matrix=matrix, translation=translation, centre=BRAIN_CENTRE_ZYX.copy(), grid_origin=lo,
                   grid_spacing=grid_spacing, disp=disp.astype(np.float32))

    def displacement(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) subject mm -> (N, 3) displacement in mm."""
        idx = ((pts - self.grid_origin) / self.grid_spacing).T
        return np.stack([ndimage.map_coordinates(d, idx, order=1, mode="nearest", prefilter=False)
                         for d in self.disp], axis=1)

    def pull(self, pts: np.ndarray) -> np.ndarray:
        """Subject mm (N, 3) -> template mm (N, 3)."""
        pts = np.asarray(pts, dtype=np.float64)
        return (pts - self.centre) @ self.matrix.T + self.centre + self.translation + self.displacement(pts)

    def push(self, q: np.ndarray, n_iter: int = 12) -> np.ndarray:
        """Template mm -> subject mm, by fixed-point iteration of the pull mapping (u is small, smooth)."""
        q = np.atleast_2d(np.asarray(q, dtype=np.float64))
        minv = np.linalg.inv(self.matrix)
        p = (q - self.centre - self.translation) @ minv.T + self.centre
        for _ in range(n_iter):
            p = (q - self.centre - self.translation - self.displacement(p)) @ minv.T + self.centre
        return p

    def as_dict(self) -> dict:
        return {"matrix": np.round(self.matrix, 6).tolist(), "translation_mm": np.round(self.translation, 4).tolist(),
                "elastic_rms_mm": round(float(np.sqrt((self.disp ** 2).sum(0).mean())), 4)}


def _rotation(angles: np.ndarray) -> np.ndarray:
    a, b, c = angles
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])  # about z (first axis)
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def sample_template(volume: np.ndarray, tpl: Template, q_mm: np.ndarray, order: int, cval: float = 0.0) -> np.ndarray:
    """Samples a template-space volume at template mm points (N, 3)."""
    return ndimage.map_coordinates(volume, tpl.mm_to_index(q_mm), order=order, mode="constant", cval=cval,
                                   prefilter=False)
