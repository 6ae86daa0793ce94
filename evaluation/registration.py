"""Input checks for T2w scans and their registration to the MNI152 template (SimpleITK).

`check_axial_geometry` is the one place that decides whether a scan's geometry is usable (3D, scalar,
axial slices along ITK index axis 2): `mfns-predict` calls it on the file header, the rating-slice finder
on the loaded image (`check_axial_3d`).

Registration maps SUBJECT points to TEMPLATE points (fixed = subject, moving = template), which is the
direction needed to pull template labels onto the subject grid. Steps, all on downsampled copies
(~`REG_MM` in-plane, the native slice spacing up to 4 mm):
1. centre-of-mass initialisation from the head (Otsu foreground) of both images,
2. exhaustive search over superior-inferior shift and pitch (a partial-brain slab or a tilted head
   defeats the centre of mass along z; MI is evaluated on a coarse grid),
3. affine, Mattes mutual information, 3 resolution levels (optionally a B-spline on top),
4. local refinement: a second affine restricted to a sphere of `LOCAL_RADIUS_MM` around the deep brain
   (basal ganglia, thalami, lateral ventricles); the whole-brain affine cannot follow local anatomical
   differences of a few mm there, and the BG slice (anterior commissure), the BG region and the ventricle
   search live there,
5. quality: Mattes MI before/after and the normalised correlation between subject and warped
   template inside the template brain; a correlation below `MIN_NCC` is a failed registration.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_mfns.errors import MfnsInputError

from .template import BRAIN, MniTemplate, load_mni_template

logger = logging.getLogger(__name__)

REG_MM = 2.0  # in-plane voxel size of the registration copies
MIN_NCC = 0.5  # template/subject correlation inside the brain below which registration failed
MAX_AXIAL_TILT_DEG = 45.0  # slice normal vs the patient's superior-inferior axis
MIN_BRAIN_ML = 20.0  # brain volume in view below which there is no brain to rate
# deep-brain sphere of the local refinement: MNI (0, -8, 8) mm (RAS), 40 mm radius, covers the AC
# (0, 2, -4), the basal ganglia and thalami (z -12..24) and the bodies of the lateral ventricles
LOCAL_CENTRE_LPS = (0.0, 8.0, 8.0)
LOCAL_RADIUS_MM = 40.0


def read_t2w(path: str | Path) -> sitk.Image:
    """Reads a scan through the project's checked reader (`nnunetv2_mfns.image_checks`: complete gzip
    stream, sane header, finite and non-constant values); a trailing singleton 4th dimension is dropped,
    real 4D refused."""
    from nnunetv2_mfns.image_checks import read_checked_image
    return read_checked_image(path, "T2w scan", "image")


def check_axial_geometry(source: str, dim: int, size: tuple, n_components: int, direction: tuple) -> None:
    """Raises MfnsInputError unless the geometry is a 3D scalar volume with axial slices along index axis 2.

    Takes header values so that `mfns-predict` can check a file without loading its voxels
    (`sitk.ImageFileReader.ReadImageInformation`) and the rating-slice finder a loaded image, with one rule.
    Axial: the slice normal (3rd direction column) is within 45 degrees of the patient's S-I axis."""
    size = tuple(int(s) for s in size)
    if dim >= 4:
        raise MfnsInputError(f"{source}: {dim}D image (size {size}); give one 3D T2w volume")
    if dim != 3:
        raise MfnsInputError(f"{source}: {dim}D image (size {size}); a 3D T2w volume is needed")
    if n_components != 1:
        raise MfnsInputError(f"{source}: {n_components} components per voxel; "
                             "a scalar (grey-value) T2w volume is needed")
    if min(size) < 3:
        raise MfnsInputError(f"{source}: size {size} is not a 3D volume (a 2D image or a single slice)")
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    normal = d[:, 2] / max(np.linalg.norm(d[:, 2]), 1e-12)
    tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
    if tilt > MAX_AXIAL_TILT_DEG:
        axis = "LR" if abs(normal[0]) >= abs(normal[1]) else "AP"
        kind = "sagittal" if axis == "LR" else "coronal"
        raise MfnsInputError(f"{source}: not an axial acquisition: slices (index axis 2) run along {axis}, "
                             f"{tilt:.0f} deg from superior-inferior (looks {kind}); reslice it to axial")


def check_axial_3d(image: sitk.Image, source: str = "image") -> None:
    """`check_axial_geometry` on a loaded image (constant or non-finite images: see `image_array`)."""
    check_axial_geometry(source, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel(),
                         image.GetDirection())


def image_array(image: sitk.Image, source: str = "image") -> np.ndarray:
    """float32 array (z, y, x); refuses non-finite or constant images (no signal, hence no brain)."""
    arr = sitk.GetArrayViewFromImage(image).astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise MfnsInputError(f"{source}: image contains NaN or Inf voxels")
    if float(arr.max() - arr.min()) <= 0:
        raise MfnsInputError(f"{source}: constant image (no signal, no brain in view)")
    return arr


@dataclass
class RegistrationResult:
    """`transform` maps subject physical points (LPS mm) to template physical points (whole brain);
    `local_transform` does the same, refined on the deep brain (use it for the AC, BG and ventricles)."""

    transform: sitk.Transform
    local_transform: sitk.Transform
    info: dict = field(default_factory=dict)


def downsample(image: sitk.Image, target_mm: float = REG_MM) -> sitk.Image:
    """float32 copy averaged down to ~`target_mm` per axis (BinShrink after a matching Gaussian)."""
    img = sitk.Cast(image, sitk.sitkFloat32)
    factors = [max(1, int(round(target_mm / s))) for s in img.GetSpacing()]
    if max(factors) == 1:
        return img
    sig = [0.5 * f * s if f > 1 else 0.0 for f, s in zip(factors, img.GetSpacing())]
    img = sitk.SmoothingRecursiveGaussian(img, sig) if all(v > 0 for v in sig) else _smooth_axes(img, sig)
    return sitk.BinShrink(img, factors)


def _smooth_axes(img: sitk.Image, sig: list[float]) -> sitk.Image:
    for axis, s in enumerate(sig):
        if s > 0:
            f = sitk.RecursiveGaussianImageFilter()
            f.SetSigma(s)
            f.SetDirection(axis)
            img = f.Execute(img)
    return img


def _head_mask(img: sitk.Image) -> sitk.Image:
    """Head foreground: Otsu threshold of the (downsampled) image, largest component, holes filled."""
    fg = sitk.OtsuThreshold(img, 0, 1)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(fg), sortByObjectSize=True)
    return sitk.BinaryFillhole(cc == 1)


def _centre(mask: sitk.Image) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    return np.asarray(stats.GetCentroid(1))


def _metric_method(seed: int, sampling: float) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK reads seed 0 as "seed from the wall clock" (sitkWallClock): shift by one so that every
    # user seed, 0 included, gives the same samples on every run
    reg.SetMetricSamplingPercentage(sampling, int(seed) + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def _mi(fixed: sitk.Image, moving: sitk.Image, tf: sitk.Transform, seed: int) -> float:
    reg = _metric_method(seed, 0.5)
    reg.SetInitialTransform(tf, inPlace=False)
    return float(reg.MetricEvaluate(fixed, moving))


def _ncc_in_brain(fixed: sitk.Image, tpl: MniTemplate, tf: sitk.Transform) -> tuple[float, float]:
    """Correlation of subject and warped template intensities inside the warped template brain,
    and the brain volume (ml) that lies in the subject's field of view."""
    warped = sitk.Resample(tpl.t2, fixed, tf, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    labels = sitk.Resample(tpl.labels, fixed, tf, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    brain = (sitk.GetArrayViewFromImage(labels) & BRAIN) > 0
    ml = float(brain.sum() * np.prod(fixed.GetSpacing()) / 1000.0)
    if brain.sum() < 50:
        return 0.0, ml
    a = sitk.GetArrayViewFromImage(fixed)[brain].astype(np.float64)
    b = sitk.GetArrayViewFromImage(warped)[brain].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0, ml
    return float(np.corrcoef(a, b)[0, 1]), ml


def register_to_mni(image: sitk.Image, *, deformable: bool = False, seed: int = 0, source: str = "image",
                    template: MniTemplate | None = None) -> RegistrationResult:
    """Registers a (checked) T2w scan to the MNI152 template; raises MfnsInputError if it fails.

    Runs ITK single-threaded (the global default is restored afterwards): its threaded metric sums
    per-thread partial results in a run-dependent order, so repeated runs differed from the 4th decimal
    of the transform parameters on; single-threaded, the same seed gives the same transform. The
    registration costs ~6-10 s of CPU on the downsampled images."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register(image, deformable=deformable, seed=seed, source=source, template=template)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _register(image: sitk.Image, *, deformable: bool, seed: int, source: str,
              template: MniTemplate | None) -> RegistrationResult:
    t0 = time.perf_counter()
    tpl = template or load_mni_template()
    t_tpl = time.perf_counter() - t0
    fixed = downsample(image, REG_MM)
    arr = sitk.GetArrayViewFromImage(fixed)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if hi <= lo:
        raise MfnsInputError(f"{source}: no contrast in the image (no brain in view)")
    fixed = sitk.Clamp(fixed, sitk.sitkFloat32, float(lo), float(hi))

    # 1. centres of mass of the heads (in-plane); z is searched below
    c_fix = _centre(_head_mask(fixed))
    c_mov = _centre(_head_mask(tpl.t2))
    init = sitk.Euler3DTransform()
    init.SetCenter(c_fix.tolist())
    init.SetTranslation((c_mov - c_fix).tolist())

    # 2. exhaustive search: shift along S-I (+-60 mm, 5 mm steps) x pitch (+-20 deg, 10 deg steps)
    coarse_fix = sitk.BinShrink(fixed, [max(1, int(round(4.0 / s))) for s in fixed.GetSpacing()])
    reg = _metric_method(seed, 1.0)
    reg.SetInitialTransform(init, inPlace=True)
    reg.SetOptimizerAsExhaustive([2, 0, 0, 0, 0, 12])
    reg.SetOptimizerScales([np.radians(10.0), 1, 1, 1, 1, 5.0])
    reg.Execute(coarse_fix, tpl.t2)
    mi_before = _mi(fixed, tpl.t2, init, seed)

    # 3. affine, multi-resolution
    aff = sitk.AffineTransform(3)
    aff.SetCenter(init.GetCenter())
    aff.SetMatrix(init.GetMatrix())
    aff.SetTranslation(init.GetTranslation())
    reg = _metric_method(seed, 0.25)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=150,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([4.0, 2.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(aff, inPlace=True)
    reg.Execute(fixed, tpl.t2)
    tf: sitk.Transform = aff
    kind = "affine"

    if deformable:
        # budget kept small: 60 iterations over two levels at 25% sampling took > 2 min of CPU
        bs = sitk.BSplineTransformInitializer(fixed, [5, 5, 5], order=3)
        reg = _metric_method(seed, 0.1)
        reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-4, numberOfIterations=25,
                                 maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=50)
        reg.SetShrinkFactorsPerLevel([2])
        reg.SetSmoothingSigmasPerLevel([2.0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetMovingInitialTransform(aff)
        reg.SetInitialTransform(bs, inPlace=True)
        reg.Execute(fixed, tpl.t2)
        tf = sitk.CompositeTransform([aff, bs])
        kind = "affine+bspline"

    local = _refine_deep(fixed, tpl, tf, seed)
    mi_after = _mi(fixed, tpl.t2, tf, seed)
    ncc, brain_ml = _ncc_in_brain(fixed, tpl, tf)
    ok = ncc >= MIN_NCC and brain_ml >= MIN_BRAIN_ML
    info = {"metric": "normalised correlation in the template brain (Mattes MI before/after also given)",
            "ncc_after": round(ncc, 4), "ncc_threshold": MIN_NCC, "mattes_mi_before": round(mi_before, 4),
            "mattes_mi_after": round(mi_after, 4), "brain_ml_in_view": round(brain_ml, 1), "transform": kind,
            "ok": bool(ok), "seed": int(seed), "seconds": round(time.perf_counter() - t0, 2),
            "template_seconds": round(t_tpl, 2)}
    logger.info("%s: registration %s, NCC %.3f, MI %.3f -> %.3f, %.1f s", source, kind, ncc, mi_before, mi_after,
                info["seconds"])
    if brain_ml < MIN_BRAIN_ML:
        raise MfnsInputError(f"{source}: no brain in view (registration places {brain_ml:.0f} ml of brain "
                             f"in the field of view)")
    if not ok:
        raise MfnsInputError(f"{source}: registration to MNI152 failed (correlation {ncc:.2f} < {MIN_NCC} "
                             "inside the brain); give the rating slices by hand or check the scan")
    return RegistrationResult(transform=tf, local_transform=local, info=info)


def _refine_deep(fixed: sitk.Image, tpl: MniTemplate, tf: sitk.Transform, seed: int) -> sitk.Transform:
    """Affine refinement on a fixed-image sphere around the deep brain (see the module doc, step 4)."""
    if isinstance(tf, sitk.CompositeTransform):  # the B-spline already follows local differences
        return tf
    affine = tf
    centre = np.asarray(affine.GetInverse().TransformPoint(LOCAL_CENTRE_LPS))
    size = fixed.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    d = np.asarray(fixed.GetDirection()).reshape(3, 3)
    pts = np.asarray(fixed.GetOrigin()) + (idx * np.asarray(fixed.GetSpacing())) @ d.T
    inside = (np.linalg.norm(pts - centre, axis=1) <= LOCAL_RADIUS_MM).reshape(size)  # (x, y, z)
    if inside.sum() < 200:  # deep brain not in view (e.g. a thin slab): keep the whole-brain transform
        return tf
    mask = sitk.GetImageFromArray(np.ascontiguousarray(inside.transpose(2, 1, 0)).astype(np.uint8))
    mask.CopyInformation(fixed)
    local = sitk.AffineTransform(affine)
    reg = _metric_method(seed, 0.5)
    reg.SetMetricFixedMask(mask)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=100,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(local, inPlace=True)
    reg.Execute(fixed, tpl.t2)
    return local
