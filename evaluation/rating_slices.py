"""Rating slices (BG, CSO) and rating regions of a T2w scan without manual input.

The paper's raters used the axial slice through the anterior commissure (BG) and the slice 1 cm above
the top of the lateral ventricles (CSO). Here:
- the scan is registered to the MNI152 template (`registration.register_to_mni`), template-space
  definitions (`template.py`) are pulled onto the subject grid with one nearest-neighbour resampling,
- BG slice: the template's anterior commissure (MNI (0, 2, -4), the phantom's AC) mapped to the
  subject; the slice whose centre is nearest to it,
- ventricle top: found in SUBJECT space: bright CSF (Otsu threshold inside the registered ventricle
  neighbourhood), connected components touching the registered template ventricles, off the midline;
  the area profile of the (off-midline) ventricle per slice is followed upwards while it tapers; the
  roof lies between the last slice with at least `MIN_TOP_AREA_MM2` and the next one, where the last
  step of the taper (area against slice-centre position) extrapolates linearly to zero area (taking the
  last slice with ventricle as the top was biased one slice low on calibration phantoms, seed 1). A run that stops tapering near the
  roof (area >= `PLATEAU_RATIO` x the slice below while under `ROOF_FRACTION` of the largest area) is a
  CSF-like lesion sitting on the roof (a lacune), not ventricle, and ends the walk,
- CSO slice: the slice whose centre is nearest to 10 mm above the ventricle roof,
- regions: BG = template BG region minus the subject's ventricles; CSO = white matter (dilated by one
  voxel in-plane) on every slice above the ventricle top; WM = all white matter; brain; hemispheres
  by the template midline (1 = patient left = MNI x < 0, 2 = patient right).
Manual indices, when given, override the automatic ones (regions still come from the registration).
A failed registration always raises MfnsInputError -- also with manual slices, because the regions
come from it -- so a bad alignment is never used silently.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_mfns.errors import MfnsInputError

from .io import write_image_atomic
from .registration import MIN_BRAIN_ML, check_axial_3d, image_array, read_t2w, register_to_mni
from .template import BG, BRAIN, LATERAL, LEFT, VENT, VENT_NEAR, WM, load_mni_template

logger = logging.getLogger(__name__)

REGIONS = ("BG", "CSO", "WM", "brain")
CSO_ABOVE_MM = 10.0
MIN_TOP_AREA_MM2 = 20.0  # ventricle area on a slice from which it counts as "ventricle present"
PLATEAU_RATIO = 0.8
ROOF_FRACTION = 0.15


@dataclass
class RatingSliceResult:
    """Slice indices are 0-based along ITK index axis 2 (= numpy axis 0 of sitk.GetArrayFromImage).

    `regions[name]`: uint8 (z, y, x) masks on the subject grid for "BG", "CSO", "WM", "brain";
    `hemisphere`: 0 outside the brain, 1 patient left (MNI x < 0), 2 patient right;
    `registration`: quality and timing (see `registration.register_to_mni`)."""

    bg_slice: int
    cso_slice: int
    slice_source: dict[str, str]
    regions: dict[str, np.ndarray]
    hemisphere: np.ndarray
    ventricle_top_slice: int
    registration: dict
    automatic_slices: dict[str, int | None]

    def summary(self) -> dict:
        """JSON-able summary (no arrays) for reports and QC lines."""
        return {"rating_slices": {"BG": self.bg_slice, "CSO": self.cso_slice}, "slice_source": dict(self.slice_source),
                "automatic_slices": dict(self.automatic_slices), "ventricle_top_slice": self.ventricle_top_slice,
                "registration": dict(self.registration)}


def _check_manual(manual: dict | None, n_slices: int, source: str) -> dict[str, int]:
    if manual is None:
        return {}
    if not isinstance(manual, dict):
        raise MfnsInputError(f"{source}: manual slices must be a dict {{'BG': index, 'CSO': index}}")
    out = {}
    for k, v in manual.items():
        if k not in ("BG", "CSO"):
            raise MfnsInputError(f"{source}: manual slice region {k!r} is not 'BG' or 'CSO'")
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) < n_slices:
            raise MfnsInputError(f"{source}: manual {k} slice {v!r} is not an index in 0..{n_slices - 1}")
        out[k] = int(v)
    return out


def _superior_sign(image: sitk.Image) -> int:
    """+1 if increasing index axis 2 goes towards the head's top (LPS S), -1 otherwise."""
    return 1 if image.GetDirection()[8] >= 0 else -1


def _template_point_to_subject(tf: sitk.Transform, q: tuple[float, float, float]) -> np.ndarray:
    """Inverse of the subject->template mapping at one point (affine inverse, then fixed-point
    refinement, which converges for the small smooth B-spline part)."""
    q = np.asarray(q, dtype=np.float64)
    affine = tf.GetNthTransform(0) if isinstance(tf, sitk.CompositeTransform) else tf
    p = np.asarray(affine.GetInverse().TransformPoint(q.tolist()))
    a = np.asarray(affine.GetMatrix()).reshape(3, 3)
    ainv = np.linalg.inv(a)
    for _ in range(20):
        r = np.asarray(tf.TransformPoint(p.tolist())) - q
        if np.linalg.norm(r) < 1e-3:
            break
        p = p - ainv @ r
    return p


def _ventricles(arr: np.ndarray, labels: np.ndarray, spacing_zyx: np.ndarray, source: str) -> np.ndarray:
    """Subject's lateral ventricles: bright CSF inside the registered neighbourhood, connected to the
    registered template ventricles."""
    from skimage.filters import threshold_otsu  # scikit-image: declared in setup.py (nnunetv2 needs it too)

    near = (labels & VENT_NEAR) > 0
    core = (labels & VENT) > 0
    if near.sum() < 50 or core.sum() < 10:
        raise MfnsInputError(f"{source}: the lateral ventricles are not in the field of view after registration")
    vals = arr[near]
    thr = float(threshold_otsu(vals))
    bright = near & (arr > thr)
    # fill single-voxel noise gaps in-plane, then keep only components touching the template ventricles
    bright = ndimage.binary_opening(bright, structure=np.ones((1, 2, 2), bool)) | (bright & core)
    lab, n = ndimage.label(bright)
    if n == 0:
        raise MfnsInputError(f"{source}: no ventricle CSF found near the registered lateral ventricles")
    touch = np.unique(lab[core & bright])
    keep = np.zeros(n + 1, bool)
    keep[touch[touch > 0]] = True
    return keep[lab]


def ventricle_roof(area_mm2: np.ndarray) -> float | None:
    """Continuous slice position of the ventricle roof from the per-slice ventricle area, slices ordered
    inferior -> superior (see the module doc); None if no slice has `MIN_TOP_AREA_MM2`."""
    a = np.asarray(area_mm2, dtype=np.float64)
    if not np.any(a >= MIN_TOP_AREA_MM2):
        return None
    k = int(np.argmax(a))
    peak = a[k]
    while k + 1 < len(a) and a[k + 1] >= MIN_TOP_AREA_MM2:
        if a[k + 1] < ROOF_FRACTION * peak and a[k + 1] >= PLATEAU_RATIO * a[k]:
            break  # stops tapering under the roof: a lesion on top of the ventricle
        k += 1
    below = a[k - 1] if k > 0 else a[k]
    step = below - a[k]
    # area against slice-centre position, extrapolated to zero: the roof lies `frac` slices above k
    frac = float(np.clip(a[k] / step, 0.0, 1.0)) if step > 0 else 0.5
    return k + frac


def _roof(vent: np.ndarray, labels: np.ndarray, spacing_zyx: np.ndarray, sign: int) -> float | None:
    """Roof of the lateral ventricles as a continuous index along axis 0 (None if not found)."""
    lateral = vent & ((labels & LATERAL) > 0)
    area = lateral.sum(axis=(1, 2)) * float(spacing_zyx[1] * spacing_zyx[2])
    if sign > 0:
        return ventricle_roof(area)
    r = ventricle_roof(area[::-1])
    return None if r is None else len(area) - 1 - r


def locate_rating_slices(image: sitk.Image | str | Path, *, manual_slices: dict | None = None, deformable: bool = False,
                         seed: int = 0, source: str | None = None) -> RatingSliceResult:
    """Finds the BG and CSO rating slices and the rating regions of one T2w scan (see module doc).

    `image`: SimpleITK image or a path; `source` names it in error messages. Raises MfnsInputError for
    non-3D, 4D, non-axial or blank input, no brain in view, a failed registration, or a rating slice
    outside the field of view (unless given by hand)."""
    if isinstance(image, (str, Path)):
        source = source or str(image)
        image = read_t2w(image)
    source = source or "image"
    check_axial_3d(image, source)
    arr = image_array(image, source)
    n_slices = arr.shape[0]
    manual = _check_manual(manual_slices, n_slices, source)

    reg = register_to_mni(image, deformable=deformable, seed=seed, source=source)
    tpl = load_mni_template()
    labels = sitk.GetArrayFromImage(sitk.Resample(tpl.labels, image, reg.transform, sitk.sitkNearestNeighbor, 0,
                                                  sitk.sitkUInt8))
    if reg.local_transform is not reg.transform:
        # deep-brain definitions (BG, ventricles) from the deep-brain refinement, the rest whole-brain
        deep_bits = np.uint8(BG | VENT_NEAR | VENT | LATERAL)
        deep = sitk.GetArrayFromImage(sitk.Resample(tpl.labels, image, reg.local_transform, sitk.sitkNearestNeighbor,
                                                    0, sitk.sitkUInt8))
        labels = (labels & ~deep_bits) | (deep & deep_bits)
    spacing_zyx = np.asarray(image.GetSpacing()[::-1], dtype=np.float64)
    sign = _superior_sign(image)
    brain = (labels & BRAIN) > 0
    if brain.sum() * np.prod(spacing_zyx) < MIN_BRAIN_ML * 1000.0:
        raise MfnsInputError(f"{source}: no brain in view (under 20 ml of brain after registration)")

    # BG slice: the anterior commissure
    ac = _template_point_to_subject(reg.local_transform, tpl.ac_lps)
    bg_auto = int(np.floor(image.TransformPhysicalPointToContinuousIndex(ac.tolist())[2] + 0.5))

    # CSO slice: 1 cm above the top of the subject's lateral ventricles
    vent = _ventricles(arr, labels, spacing_zyx, source)
    roof = _roof(vent, labels, spacing_zyx, sign)
    if roof is None:
        raise MfnsInputError(f"{source}: the top of the lateral ventricles was not found in the field of view")
    top = int(np.floor(roof + 0.5))
    cso_auto = int(np.floor(roof + sign * CSO_ABOVE_MM / spacing_zyx[0] + 0.5))

    auto = {"BG": bg_auto if 0 <= bg_auto < n_slices else None, "CSO": cso_auto if 0 <= cso_auto < n_slices else None}
    chosen, src = {}, {}
    for k in ("BG", "CSO"):
        if k in manual:
            chosen[k], src[k] = manual[k], "manual"
        elif auto[k] is None:
            what = "anterior commissure" if k == "BG" else "slice 1 cm above the lateral ventricles"
            raw = bg_auto if k == "BG" else cso_auto
            raise MfnsInputError(f"{source}: the {k} rating slice ({what}, index {raw}) lies outside the "
                                 f"{n_slices} slices in view; give it by hand")
        else:
            chosen[k], src[k] = auto[k], "automatic"

    wm = (labels & WM) > 0
    above = (sign * (np.arange(n_slices) - top) > 0)[:, None, None]
    cross = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool)
    regions = {
        "BG": ((labels & BG) > 0) & brain & ~vent,
        "CSO": ndimage.binary_dilation(wm, structure=cross) & brain & above,
        "WM": wm & brain,
        "brain": brain,
    }
    hemisphere = np.where(brain, np.where((labels & LEFT) > 0, 1, 2), 0).astype(np.uint8)
    logger.info("%s: BG slice %d (%s), CSO slice %d (%s), ventricle top %d", source, chosen["BG"], src["BG"],
                chosen["CSO"], src["CSO"], top)
    return RatingSliceResult(bg_slice=chosen["BG"], cso_slice=chosen["CSO"], slice_source=src,
                             regions={k: v.astype(np.uint8) for k, v in regions.items()}, hemisphere=hemisphere,
                             ventricle_top_slice=top, registration=reg.info, automatic_slices=auto)


def write_region_masks(result: RatingSliceResult, reference: sitk.Image, out_dir: str | Path, case: str,
                       include_hemisphere: bool = True) -> dict[str, Path]:
    """Writes `<case>_<region>.nii.gz` (uint8, the geometry of `reference`) for every region (and
    `<case>_hemisphere.nii.gz`); each file is written to a temporary name and renamed, so an
    interrupted run leaves no half-written mask. Returns {name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = dict(result.regions)
    if include_hemisphere:
        items["hemisphere"] = result.hemisphere
    paths = {}
    for name, arr in items.items():
        if arr.shape != tuple(reference.GetSize()[::-1]):
            raise MfnsInputError(f"{case}: region {name} has shape {arr.shape}, reference image "
                                 f"{tuple(reference.GetSize()[::-1])}")
        path = out_dir / f"{case}_{name}.nii.gz"
        write_image_atomic(arr.astype(np.uint8), reference, path)
        paths[name] = path
    return paths


def find_case_image(case: str, subject: dict, dataset_dir: str | Path) -> Path | None:
    """The T2w scan of a dataset case: imagesTr/ or imagesTs/<case>_0000.nii.gz, else subjects.json's
    `source.t2w`; None if there is none."""
    for sub in ("imagesTr", "imagesTs"):
        p = Path(dataset_dir) / sub / f"{case}_0000.nii.gz"
        if p.is_file():
            return p
    src = subject.get("source") if isinstance(subject.get("source"), dict) else {}
    if src.get("t2w") and Path(src["t2w"]).is_file():
        return Path(src["t2w"])
    return None


def automatic_slices_for_case(case: str, subject: dict, dataset_dir: str | Path,
                              seed: int = 0) -> tuple[dict[str, int], dict[str, np.ndarray]] | None:
    """Rating slices {"BG", "CSO"} and region masks of a case that subjects.json gives none for.

    Returns None (with a warning naming the case and the reason) when the case has no T2w scan or the
    scan cannot be rated automatically, so the caller skips it as it skips any unrated case."""
    path = find_case_image(case, subject, dataset_dir)
    if path is None:
        logger.warning("%s: no rating slices in subjects.json and no T2w scan (imagesTr/imagesTs/%s_0000.nii.gz or "
                       "source.t2w) to find them: not counted", case, case)
        return None
    try:
        res = locate_rating_slices(path, seed=seed, source=str(path))
    except MfnsInputError as e:
        logger.warning("%s: no rating slices in subjects.json and the automatic ones failed (%s): not counted", case, e)
        return None
    logger.info("%s: no rating slices in subjects.json; automatic BG %d, CSO %d (registration NCC %.3f, seed %d)",
                case, res.bg_slice, res.cso_slice, res.registration["ncc_after"], seed)
    return {"BG": res.bg_slice, "CSO": res.cso_slice}, {"BG": res.regions["BG"], "CSO": res.regions["CSO"]}
