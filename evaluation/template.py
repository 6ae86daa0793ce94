"""MNI152 template for automatic rating slices: a T2-like image and region labels, offline.

Built from nilearn's packaged MNI152 2009 tissue maps through the phantom's own template loader
(`dataset_conversion.phantom.anatomy.load_template`), so that the definitions of the ventricles, deep
grey matter and the BG rating region are ONE definition shared by the phantom and by this module
(nilearn ships no subcortical atlas offline; see anatomy.py's docstring for the heuristics).

Template-space definitions carried back to a subject (bits of one uint8 label image, so a single
nearest-neighbour resampling carries all of them):
- BRAIN: the MNI152 brain mask,
- BG: the BG rating region (per axial slice and hemisphere the convex hull of the deep grey matter),
- WM: voxels where white matter is the dominant tissue (WM >= GM and WM >= CSF),
- LEFT: patient left, i.e. MNI x < 0 (RAS); right is MNI x >= 0,
- VENT_NEAR: within `VENT_NEIGHBOURHOOD_MM` of the lateral ventricles (where the subject's ventricles
  may be after atrophy and registration error; searched for bright CSF in subject space),
- VENT: the template's lateral ventricles,
- LATERAL: |MNI x| >= 4 mm (the ventricle top is measured off the midline, as the phantom does:
  the midline band above the ventricles is the callosal sulcus, not ventricle).

T2-like intensities: relative T2w signal of CSF 1.0, cortex 0.39, WM 0.34 (PVSDRO values, Bernal et
al. 2022), mixed by the tissue fractions; outside the brain a generic head: a 1.5 mm CSF rim, a dark
6 mm skull and a 5.5 mm intermediate scalp. Mutual information only needs the structure, not the values.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

BRAIN, BG, WM, LEFT, VENT_NEAR, VENT, LATERAL = 1, 2, 4, 8, 16, 32, 64
VENT_NEIGHBOURHOOD_MM = 8.0
# relative T2w signal (PVSDRO: CSF 1152, cortex 450, WM 395, skull 60, scalp 320)
T2_CSF, T2_GM, T2_WM, T2_SKULL, T2_SCALP = 1.0, 0.39, 0.34, 0.05, 0.28


@dataclass(frozen=True)
class MniTemplate:
    """`t2`: T2-like image (float32, `registration_mm` voxels), `labels`: bit labels at 1 mm,
    `ac_lps`: anterior commissure as an ITK physical point (LPS mm)."""

    t2: sitk.Image
    labels: sitk.Image
    ac_lps: tuple[float, float, float]
    registration_mm: float


def _to_sitk(arr_zyx: np.ndarray, origin_zyx_ras: np.ndarray) -> sitk.Image:
    """(z, y, x) RAS-ordered 1 mm array -> ITK image; LPS physical space via a flipped direction."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr_zyx))
    img.SetSpacing((1.0, 1.0, 1.0))
    z0, y0, x0 = (float(v) for v in origin_zyx_ras)
    img.SetOrigin((-x0, -y0, z0))  # RAS -> LPS: negate x and y
    img.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    return img


@functools.lru_cache(maxsize=2)
def load_mni_template(registration_mm: float = 2.0) -> MniTemplate:
    """Builds (once per process, ~5-10 s) the T2-like MNI152 template and its label image."""
    from nnunetv2_mfns.dataset_conversion.phantom import anatomy

    tpl = anatomy.load_template()
    z, y, x = np.meshgrid(*[tpl.origin[i] + np.arange(tpl.shape[i]) for i in range(3)], indexing="ij", sparse=True)
    gm, wm, csf, mask = tpl.gm, tpl.wm, tpl.csf, tpl.mask

    t2 = csf * T2_CSF + gm * T2_GM + wm * T2_WM
    d = tpl.d_out
    out = ~mask
    t2 = np.where(out & (d <= 1.5), T2_CSF, t2)
    t2 = np.where(out & (d > 1.5) & (d <= 7.5), T2_SKULL, t2)
    t2 = np.where(out & (d > 7.5) & (d <= 13.0), T2_SCALP, t2)
    t2 = np.where(out & (d > 13.0), 0.0, t2).astype(np.float32)

    labels = np.zeros(tpl.shape, np.uint8)
    labels |= np.where(mask, BRAIN, 0).astype(np.uint8)
    labels |= np.where(tpl.bg_region, BG, 0).astype(np.uint8)
    labels |= np.where(mask & (wm >= gm) & (wm >= csf) & (wm > 0.1), WM, 0).astype(np.uint8)
    labels |= np.where(np.broadcast_to(x < 0, tpl.shape), LEFT, 0).astype(np.uint8)
    labels |= np.where((tpl.d_vent <= VENT_NEIGHBOURHOOD_MM) & mask, VENT_NEAR, 0).astype(np.uint8)
    labels |= np.where(tpl.ventricles, VENT, 0).astype(np.uint8)
    labels |= np.where(np.broadcast_to(np.abs(x) >= 4, tpl.shape), LATERAL, 0).astype(np.uint8)
    del z, y

    t2_img = _to_sitk(t2, tpl.origin)
    # registration copy: smoothed then averaged down (the subject is downsampled the same way)
    f = max(1, int(round(registration_mm)))
    if f > 1:
        t2_img = sitk.BinShrink(sitk.SmoothingRecursiveGaussian(t2_img, 0.5 * f), [f, f, f])
    ac = anatomy.AC_MNI_ZYX  # (z, y, x) RAS mm
    ac_lps = (-float(ac[2]), -float(ac[1]), float(ac[0]))
    return MniTemplate(t2=t2_img, labels=_to_sitk(labels, tpl.origin), ac_lps=ac_lps, registration_mm=float(f))
