"""Synthetic 3T T2w PVS cohort: one subject (`simulate_subject`) and a whole nnU-Net raw dataset
(`generate_cohort`). See docs/phantom.md for every parameter and its source."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

from nnunetv2_mfns.errors import MfnsInputError

from . import anatomy
from .acquisition import Grid, Profile, add_rician_noise, bias_field, get_profile
from .anatomy import CORTEX, DEEP_GM, VENTRICLE, WM, Contrast, SubjectTransform
from .confounders import ConfounderRecord, place_confounders
from .hard import (CONFOUNDER_BITS, HARD_PARAMS, HardParams, annotator_label, hard_rngs, kspace_acquire,
                   nuclei_t2, rim_mask, snr_of_acquired_voxel)
from .pvs import TISSUE_FOR_REGION, PVSParams, PVSRecord, bg_direction_fn, cso_direction_fn, place_pvs
from .raters import DEFAULT_RATERS, rate_subject, raters_as_dict, true_count

logger = logging.getLogger(__name__)

SCHEMA = "nnunetv2_mfns.subjects/1"
HARD_EXACT_DIR = "labels_exact"  # hard profile: exact truth (labelsTr = annotator-style labels)
HARD_CONFOUNDER_DIR = "confounders"  # hard profile: uint8 bit field of confounder types (hard.CONFOUNDER_BITS)
# paper cohort (docs/reference/paper.md): 63.0 +/- 10.3 years, range 42-79
AGE_MEAN, AGE_SD = 63.0, 10.3


@dataclass(frozen=True)
class BurdenModel:
    """PVS burden: density (PVS per cm^3 of candidate tissue) = base * exp(slope * decades + spread * z).

    z of BG and CSO are correlated (rho); calibrated so that a 20-subject cohort spans roughly 10 to
    >130 PVS on the CSO rating slice and a few to ~40 on the BG slice (docs/reference/paper.md).
    """

    cso_base: float = 3.1
    bg_base: float = 1.45
    wm_other_fraction: float = 0.25  # density of PVS in WM outside the CSO band, relative to CSO
    slope_per_decade: float = 0.3
    spread: float = 0.5
    rho: float = 0.6


@dataclass
class SubjectSpec:
    case_id: str
    subject_id: str
    age: float
    sex: str
    seed: int
    index: int


@dataclass
class SubjectResult:
    spec: SubjectSpec
    image: np.ndarray  # float32 (z, y, x)
    label: np.ndarray  # uint8
    regions: dict[str, np.ndarray]
    rating_slices: dict[str, int]
    true_counts: dict[str, int]
    rater_counts: dict[str, dict[str, int]]
    grid: Grid
    pvs_frac: np.ndarray
    conf_frac: np.ndarray
    pvs: list[PVSRecord]
    confounders: list[ConfounderRecord]
    details: dict = field(default_factory=dict)
    # hard profile only: label_exact (the truth; `label` is then the annotator's), confounder_map (bit
    # field, hard.CONFOUNDER_BITS), noise_free (the acquisition without noise) and clean (before k-space)
    hard: dict = field(default_factory=dict)
    noise_free: np.ndarray | None = None  # the acquired image without noise (in memory only; calibration)


# --------------------------------------------------------------------------------------------------
def make_demographics(n: int, seed: int, age_min: float = 42.0, age_max: float = 79.0) -> list[tuple[float, str]]:
    """Ages (integers, stratified draws from a normal 63 +/- 10.3 truncated to the range, extremes
    pinned to the range ends like the paper's cohort) and a 1:1 sex ratio, deterministic by seed."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    mean = float(np.clip(AGE_MEAN, age_min, age_max))
    a, b = (age_min - mean) / AGE_SD, (age_max - mean) / AGE_SD
    u = (rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / n
    ages = np.round(stats.truncnorm.ppf(u, a, b, loc=mean, scale=AGE_SD))
    if n >= 3:
        ages[np.argmin(ages)] = np.ceil(age_min)
        ages[np.argmax(ages)] = np.floor(age_max)
    ages = np.clip(ages, age_min, age_max)
    sexes = np.array(["F"] * (n // 2) + ["M"] * (n // 2) + ([rng.choice(["F", "M"])] if n % 2 else []))
    sexes = sexes[rng.permutation(n)]
    return [(float(x), str(s)) for x, s in zip(ages, sexes)]


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield s, min(n, s + size)


def _sample_volume(tf: SubjectTransform, volume: np.ndarray, tpl: anatomy.Template, zs: np.ndarray, ys: np.ndarray,
                   xs: np.ndarray, order: int, chunk: int = 8) -> np.ndarray:
    """Samples a template-space volume on the subject grid zs x ys x xs (pull through the transform)."""
    out = np.empty((len(zs), len(ys), len(xs)), dtype=volume.dtype)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    for a, b in _chunks(len(zs), chunk):
        pts = np.empty((b - a, len(ys), len(xs), 3))
        pts[..., 0] = zs[a:b, None, None]
        pts[..., 1] = yy[None]
        pts[..., 2] = xx[None]
        q = tf.pull(pts.reshape(-1, 3))
        out[a:b] = anatomy.sample_template(volume, tpl, q, order=order).reshape(b - a, len(ys), len(xs))
    return out


def _place_grid(profile: Profile, tf: SubjectTransform, z_ac: float, z_cso: float) -> Grid:
    ny, nx = profile.matrix
    sp = profile.spacing_zyx
    centre = tf.push(np.array([5.0, -18.0, 0.0]))[0]  # cerebrum centre (MNI z 5, y -18)
    y0 = centre[1] + profile.fov_offset_mm[0] - (ny - 1) / 2 * sp[1]
    x0 = centre[2] + profile.fov_offset_mm[1] - (nx - 1) / 2 * sp[2]
    n = profile.n_slices
    if profile.slab == "brain":
        z0 = centre[0] - (n - 1) / 2 * sp[0]
    else:
        # AC slice at index `margin`, shifted up if the CSO slice would fall into the top margin
        margin = profile.slab_margin
        z0 = z_ac - margin * sp[0]
        over = int(np.floor((z_cso - z0) / sp[0] + 0.5)) - (n - 1 - margin)
        if over > 0:
            z0 += min(over, margin - 1) * sp[0]
    return Grid(origin=np.array([z0, y0, x0]), spacing=sp, shape=(n, ny, nx))


def _inward_field(codes: np.ndarray, grid: Grid, in_plane: bool = False):
    """Unit vectors pointing into the brain, perpendicular to its outer surface (gradient of the
    smoothed brain mask). `in_plane`: smooth and differentiate within each axial slice only, i.e. the
    direction towards the centre of the slice's cross-section (the course of medullary arteries seen on
    an axial slice through the centrum semiovale)."""
    k = max(1, int(round(3.0 / grid.spacing[1])))
    brain = np.isin(codes[:, ::k, ::k], (VENTRICLE, CORTEX, DEEP_GM, WM)).astype(np.float32)
    csp = np.array([grid.spacing[0], grid.spacing[1] * k, grid.spacing[2] * k])
    sigma = 8.0 / csp
    if in_plane:
        sigma[0] = 0.0
    sm = ndimage.gaussian_filter(brain, sigma=sigma, mode="constant")
    grad = np.stack(np.gradient(sm, *csp))
    if in_plane:
        grad[0] = 0.0
    norm = np.maximum(np.linalg.norm(grad, axis=0), 1e-9)
    grad /= norm
    shape = np.array(sm.shape)

    def lookup(pt: np.ndarray) -> np.ndarray:
        i = np.clip(np.floor((pt - grid.origin) / csp + 0.5).astype(int), 0, shape - 1)
        v = grad[:, i[0], i[1], i[2]]
        if not np.any(v):
            v = np.array([0.0, 1.0, 0.0])
        return v.astype(np.float64)

    return lookup, k


def subject_rngs(seed: int, index: int) -> list[np.random.Generator]:
    """The six independent random streams of one subject: transform, anatomy, confounders, PVS,
    acquisition, raters (so the raters can change without changing any image)."""
    streams = np.random.SeedSequence(seed, spawn_key=(1, index)).spawn(6)
    return [np.random.default_rng(s) for s in streams]


def simulate_subject(spec: SubjectSpec, profile: Profile | str = "demo", contrast: Contrast = Contrast(),
                     pvs_params: PVSParams = PVSParams(), burden: BurdenModel = BurdenModel()) -> SubjectResult:
    """Simulates one subject: anatomy, confounders, PVS, acquisition, label, regions and counts."""
    profile = get_profile(profile)
    tpl = anatomy.load_template()
    r_tf, r_anat, r_conf, r_pvs, r_acq, r_rate = subject_rngs(spec.seed, spec.index)
    hp = HARD_PARAMS.get(profile.name)
    h_conf, h_pvs, h_acq, h_ann = hard_rngs(spec.seed, spec.index) if hp is not None else (None,) * 4

    tf = SubjectTransform.random(r_tf)
    # atrophy rises with age (ventricle and sulcal widening), with individual spread
    atrophy = float(np.clip((spec.age - 40.0) / 45.0 + r_anat.normal(0, 0.12), 0, 1))
    t2_tpl, codes_tpl, latvent_tpl = anatomy.subject_maps(
        tpl, atrophy, contrast, deep_t2=None if hp is None else nuclei_t2(tpl, hp))

    # landmarks in subject space: the AC and the top of the lateral ventricles
    z_ac = float(tf.push(anatomy.AC_MNI_ZYX)[0, 0])
    vidx = np.argwhere(latvent_tpl)
    vmm = tpl.index_to_mm(vidx)
    lateral = vmm[np.abs(vmm[:, 2]) >= 4]
    top_pts = lateral[lateral[:, 0] >= lateral[:, 0].max() - 3]
    z_vtop = float(tf.push(top_pts)[:, 0].max())
    grid = _place_grid(profile, tf, z_ac, z_vtop + 10.0)
    rating = {"BG": grid.slice_of_z(z_ac), "CSO": grid.slice_of_z(z_vtop + 10.0)}
    for k, v in rating.items():
        if not 0 <= v < grid.shape[0]:
            raise RuntimeError(f"{spec.case_id}: {k} rating slice {v} outside the {grid.shape[0]}-slice volume")

    zc, yc, xc = (grid.centres(a) for a in range(3))
    codes = _sample_volume(tf, codes_tpl, tpl, zc, yc, xc, order=0)
    bg_tpl = tpl.bg_region.astype(np.uint8)
    bg_region = _sample_volume(tf, bg_tpl, tpl, zc, yc, xc, order=0).astype(bool)

    # tissue T2 sampled on sub-slices and slice-profile averaged
    zt = grid.sub_centres(0, profile.tissue_z_sub)
    w = np.asarray(profile.slice_profile, dtype=np.float64).reshape(profile.tissue_z_sub, -1).sum(1)
    fine = _sample_volume(tf, t2_tpl, tpl, zt, yc, xc, order=1)
    tissue = np.tensordot(fine.reshape(len(zc), profile.tissue_z_sub, len(yc), len(xc)),
                          (w / w.sum()).astype(np.float32), axes=([1], [0])).astype(np.float32)
    del fine

    # regions (docs/interfaces.md): BG = basal-ganglia region; CSO = white matter above the ventricles
    brain = np.isin(codes, (CORTEX, DEEP_GM, WM, VENTRICLE))
    region_bg = bg_region & brain & (codes != VENTRICLE)
    vtop_slice = grid.slice_of_z(z_vtop)
    above = (np.arange(grid.shape[0]) > vtop_slice)[:, None, None]
    wm_dil = ndimage.binary_dilation(codes == WM, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    region_cso = wm_dil & brain & above

    from .scene import Scene
    scene = Scene(grid=grid, profile=profile, codes=codes, track=hp is not None)
    inward, k = _inward_field(codes, grid)
    vent_c = codes[:, ::k, ::k] == VENTRICLE
    near_vent = ndimage.binary_dilation(vent_c, structure=np.ones((1, 3, 3), bool),
                                        iterations=max(1, int(round(4.0 / (grid.spacing[1] * k)))))
    periv = np.argwhere(near_vent & (codes[:, ::k, ::k] == WM)) * np.array([1, k, k])
    conf = place_confounders(scene, r_conf, atrophy, contrast, inward, periv, hard=hp, hard_rng=h_conf)

    # PVS burden (age-related with wide spread) -> numbers to place from tissue volume
    zz = r_pvs.multivariate_normal([0, 0], [[1, burden.rho], [burden.rho, 1]])
    decades = (spec.age - AGE_MEAN) / 10.0
    dens_bg = burden.bg_base * np.exp(burden.slope_per_decade * decades + burden.spread * zz[0])
    dens_cso = burden.cso_base * np.exp(burden.slope_per_decade * decades + burden.spread * zz[1])
    vox_cm3 = float(np.prod(grid.spacing)) / 1000.0
    zmm = grid.centres(0)[:, None, None]
    bg_cand = np.argwhere(region_bg & (codes == DEEP_GM))
    cso_mask = (codes == WM) & (zmm >= z_vtop - 6.0)
    cso_cand = np.argwhere(cso_mask)
    wm_cand = np.argwhere((codes == WM) & ~cso_mask & (zmm > z_ac - 10.0))
    bg_w = 1.0 + 2.0 * np.exp(-(((zc[bg_cand[:, 0]] - z_ac) / 8.0) ** 2)) if len(bg_cand) else np.zeros(0)
    midline_x = float(tf.push(np.array([0.0, 0.0, 0.0]))[0, 2])
    n_bg = int(r_pvs.poisson(dens_bg * len(bg_cand) * vox_cm3))
    n_cso = int(r_pvs.poisson(dens_cso * len(cso_cand) * vox_cm3))
    n_wm = int(r_pvs.poisson(dens_cso * burden.wm_other_fraction * len(wm_cand) * vox_cm3))
    inward_axial, _ = _inward_field(codes, grid, in_plane=True)
    cso_dir = cso_direction_fn(inward_axial, pvs_params.cso_vertical_tilt)
    if hp is None:
        pvs = place_pvs(scene, r_pvs, "BG", n_bg, bg_cand, bg_w, bg_direction_fn(midline_x), pvs_params, contrast,
                        TISSUE_FOR_REGION["BG"])
        pvs += place_pvs(scene, r_pvs, "CSO", n_cso, cso_cand, np.ones(len(cso_cand)), cso_dir, pvs_params,
                         contrast, TISSUE_FOR_REGION["CSO"])
        pvs += place_pvs(scene, r_pvs, "WM", n_wm, wm_cand, np.ones(len(wm_cand)), cso_dir, pvs_params, contrast,
                         TISSUE_FOR_REGION["CSO"])
    else:
        bg_band = region_bg & np.isin(codes, TISSUE_FOR_REGION["BG"])
        wm_band = (codes == WM) & ~cso_mask & (zmm > z_ac - 10.0)
        pvs = _place_pvs_hard(scene, h_pvs, hp, pvs_params, contrast, [
            ("BG", n_bg, bg_cand, bg_w, bg_band, bg_direction_fn(midline_x), TISSUE_FOR_REGION["BG"]),
            ("CSO", n_cso, cso_cand, np.ones(len(cso_cand)), cso_mask, cso_dir, TISSUE_FOR_REGION["CSO"]),
            ("WM", n_wm, wm_cand, np.ones(len(wm_cand)), wm_band, cso_dir, TISSUE_FOR_REGION["CSO"])])

    # image formation: partial-volume mixing, bias field, global scale, Rician noise
    hard_out: dict = {}
    if hp is None:
        obj = np.clip(scene.pvs_frac + scene.conf_frac, 0, 1)
        clean = (1.0 - obj) * tissue + scene.pvs_sig + scene.conf_sig
        scale = float(np.exp(r_acq.uniform(np.log(0.5), np.log(2.0))))
        bias = bias_field(grid.shape, grid.spacing, r_acq, profile.bias_strength)
        sigma = scale * contrast.wm / profile.snr
        image = add_rician_noise(clean * bias * scale, sigma, r_acq)
        label = (scene.pvs_frac >= profile.label_threshold).astype(np.uint8)
        noise_free = (clean * bias * scale).astype(np.float32)
    else:
        # PVS may overlap a WMH or lacune here: the confounder keeps only the room the PVS leaves
        pf = scene.pvs_frac
        room = np.clip(1.0 - pf, 0, 1)
        cscale = np.where(scene.conf_frac > room, room / np.maximum(scene.conf_frac, 1e-6), 1.0).astype(np.float32)
        obj = np.clip(pf + scene.conf_frac * cscale, 0, 1)
        clean = (1.0 - obj) * tissue + scene.pvs_sig + scene.conf_sig * cscale
        scale = float(np.exp(r_acq.uniform(np.log(0.5), np.log(2.0))))
        bias = bias_field(grid.shape, grid.spacing, r_acq, profile.bias_strength)
        snr_acq = snr_of_acquired_voxel(hp, profile.snr, grid.spacing[0])
        sigma = scale * contrast.wm / snr_acq
        image, noise_free, acq_info = kspace_acquire(clean * bias * scale, grid.spacing[1], hp, sigma, h_acq)
        label_exact = (pf >= profile.label_threshold).astype(np.uint8)
        faint = np.array([p.faint for p in pvs], bool)
        label, ann_info = annotator_label(pf, scene.pvs_id, faint, hp, h_ann)
        conf_map = scene.conf_bits | np.where(rim_mask(codes), CONFOUNDER_BITS["rim"], 0).astype(np.uint8)
        hard_out = {"label_exact": label_exact, "confounder_map": conf_map, "noise_free": noise_free,
                    "clean": (clean * bias * scale).astype(np.float32)}

    regions = {"BG": region_bg.astype(np.uint8), "CSO": region_cso.astype(np.uint8)}
    truth_label = label if hp is None else hard_out["label_exact"]
    truth = {r: true_count(truth_label, regions[r], rating[r]) for r in ("BG", "CSO")}
    # Raters read the acquired image (in-plane pixels are square in every profile).
    raters = rate_subject(r_rate, image, regions, rating, float(grid.spacing[1]))
    details = {"atrophy": round(atrophy, 4), "transform": tf.as_dict(), "global_scale": round(scale, 5),
               "noise_sigma": round(sigma, 5), "pvs_density_per_cm3": {"BG": round(float(dens_bg), 4),
                                                                       "CSO": round(float(dens_cso), 4)},
               "n_pvs_placed": {r: sum(p.region == r for p in pvs) for r in ("BG", "CSO", "WM")},
               "n_pvs_requested": {"BG": n_bg, "CSO": n_cso, "WM": n_wm},
               "n_confounders": {kind: sum(c.kind == kind for c in conf) for kind in sorted({c.kind for c in conf})},
               "landmarks_mm": {"anterior_commissure_z": round(z_ac, 3), "lateral_ventricle_top_z": round(z_vtop, 3)},
               "n_label_voxels": int(label.sum())}
    if hp is not None:
        details.update(_hard_details(hp, profile, snr_acq, acq_info, ann_info, pvs, scene, hard_out))
    return SubjectResult(spec=spec, image=image, label=label, regions=regions, rating_slices=rating,
                         true_counts=truth, rater_counts=raters, grid=grid, pvs_frac=scene.pvs_frac,
                         conf_frac=scene.conf_frac, pvs=pvs, confounders=conf, details=details, hard=hard_out,
                         noise_free=noise_free)


def _place_pvs_hard(scene, rng: np.random.Generator, hp: HardParams, pvs_params: PVSParams, contrast: Contrast,
                    jobs: list) -> list[PVSRecord]:
    """Hard profile: per region, a `touching_fraction` share of the PVS is seeded in or next to a WMH or
    lacune (overlap with confounders allowed), the rest as usual (no overlap). Seeding is a target: of the
    labelled PVS, the share within one voxel of a WMH/lacune is measured (phantom_truth.json)."""
    bits = scene.conf_bits & (CONFOUNDER_BITS["wmh"] | CONFOUNDER_BITS["lacune"])
    ring = ndimage.binary_dilation(bits > 0, iterations=1)
    out: list[PVSRecord] = []
    for region, n, cand, weights, band, direction, allowed in jobs:
        n_touch = int(round(hp.touching_fraction * n))
        touch_cand = np.argwhere(ring & band)
        touching = place_pvs(scene, rng, region, n_touch, touch_cand, np.ones(len(touch_cand)), direction,
                             pvs_params, contrast, allowed, hard=hp, at_confounder=True)
        # where the few WMH/lacunes have no room left, the PVS are placed elsewhere (the burden stays)
        out += touching + place_pvs(scene, rng, region, n - len(touching), cand, weights, direction, pvs_params,
                                    contrast, allowed, hard=hp)
    return out


def _hard_details(hp: HardParams, profile: Profile, snr_acq: float, acq_info: dict, ann_info: dict,
                  pvs: list[PVSRecord], scene, hard_out: dict) -> dict:
    """What the hard extras did to this subject (phantom_truth.json)."""
    near = ndimage.binary_dilation((scene.conf_bits & (CONFOUNDER_BITS["wmh"] | CONFOUNDER_BITS["lacune"])) > 0,
                                   iterations=1)
    ids_exact = scene.pvs_id[hard_out["label_exact"] > 0]
    labelled = np.unique(ids_exact)
    touching = np.unique(scene.pvs_id[(hard_out["label_exact"] > 0) & near])
    cmap = hard_out["confounder_map"]
    return {"hard": {
        "snr_acquired_voxel": round(snr_acq, 3), "acquisition": acq_info, "annotator": ann_info,
        "n_pvs_labelled": int(len(labelled)),
        "pvs_touching_wmh_or_lacune_fraction": round(float(len(touching)) / max(len(labelled), 1), 4),
        "n_enlarged_pvs": int(sum(p.width_mm >= hp.enlarged_width_mm[0] for p in pvs)),
        "confounder_voxels": {k: int(((cmap & b) > 0).sum()) for k, b in CONFOUNDER_BITS.items()},
        "n_label_voxels_exact": int(hard_out["label_exact"].sum())}}


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def to_sitk(arr: np.ndarray, grid: Grid):
    """(z, y, x) RAS-ordered array -> SimpleITK image in LPS with identity direction.

    Flipping y and x turns the RAS axes into LPS, so the identity direction is correct; the slice axis
    stays ITK index axis 2 (numpy axis 0) with 2 mm spacing."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(arr[:, ::-1, ::-1]))
    sz, sy, sx = grid.spacing
    img.SetSpacing((float(sx), float(sy), float(sz)))
    ny, nx = grid.shape[1], grid.shape[2]
    x_last = grid.origin[2] + (nx - 1) * sx
    y_last = grid.origin[1] + (ny - 1) * sy
    img.SetOrigin((float(-x_last), float(-y_last), float(grid.origin[0])))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return img


def _write(arr: np.ndarray, grid: Grid, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(to_sitk(arr, grid), str(path), useCompression=True)


def _run_subject(args) -> dict:
    """Worker: simulate one subject, write its files into the temporary dataset folder."""
    spec, profile, tmp_dir = args
    res = simulate_subject(spec, profile)
    tmp_dir = Path(tmp_dir)
    _write(res.image.astype(np.float32), res.grid, tmp_dir / "imagesTr" / f"{spec.case_id}_0000.nii.gz")
    _write(res.label.astype(np.uint8), res.grid, tmp_dir / "labelsTr" / f"{spec.case_id}.nii.gz")
    for r in ("BG", "CSO"):
        _write(res.regions[r], res.grid, tmp_dir / "regions" / f"{spec.case_id}_{r}.nii.gz")
    entry = {
        "subject": spec.subject_id, "age": spec.age, "sex": spec.sex, "set": "train",
        "rating_slices": res.rating_slices,
        "region_masks": {r: f"regions/{spec.case_id}_{r}.nii.gz" for r in ("BG", "CSO")},
        "true_counts": res.true_counts, "rater_counts": res.rater_counts, "source": None,
    }
    montage = {r: {"image": res.image[res.rating_slices[r]].copy(), "label": res.label[res.rating_slices[r]].copy(),
                   "region": res.regions[r][res.rating_slices[r]].copy()} for r in ("BG", "CSO")}
    if res.hard:
        # labelsTr holds the annotator-style label (what a model is trained on); the exact truth, used
        # for scoring, and the confounder bit map live beside it (docs/phantom.md, "The hard profile")
        _write(res.hard["label_exact"], res.grid, tmp_dir / HARD_EXACT_DIR / f"{spec.case_id}.nii.gz")
        _write(res.hard["confounder_map"], res.grid, tmp_dir / HARD_CONFOUNDER_DIR / f"{spec.case_id}.nii.gz")
        entry["label_exact"] = f"{HARD_EXACT_DIR}/{spec.case_id}.nii.gz"
        entry["confounder_map"] = f"{HARD_CONFOUNDER_DIR}/{spec.case_id}.nii.gz"
        for r in ("BG", "CSO"):
            montage[r]["annotator"] = montage[r]["label"]
            montage[r]["label"] = res.hard["label_exact"][res.rating_slices[r]].copy()
    truth = {"details": res.details, "pvs": [p.as_dict() for p in res.pvs],
             "confounders": [c.as_dict() for c in res.confounders]}
    return {"case": spec.case_id, "entry": entry, "montage": montage, "truth": truth,
            "aspect": res.grid.spacing[1] / res.grid.spacing[2]}


def write_montage(rows: list[dict], path: Path, max_subjects: int = 6) -> None:
    """Rating slices (BG, CSO) of low-, mid- and high-burden subjects with label (red) and region
    (cyan) contours, so a person can judge realism at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(rows, key=lambda r: (r["entry"]["true_counts"]["CSO"], r["case"]))
    if len(order) > max_subjects:
        pick = np.unique(np.round(np.linspace(0, len(order) - 1, max_subjects)).astype(int))
        order = [order[i] for i in pick]
    n = len(order)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.6), squeeze=False)
    for j, row in enumerate(order):
        e = row["entry"]
        for i, r in enumerate(("BG", "CSO")):
            m = row["montage"][r]
            ax = axes[i, j]
            img = m["image"][::-1, :]  # anterior up
            lo, hi = np.percentile(img, [1, 99.5])
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect=row["aspect"])
            if m["region"].any():
                ax.contour(m["region"][::-1, :], levels=[0.5], colors="cyan", linewidths=0.6)
            if m["label"].any():
                ax.contour(m["label"][::-1, :], levels=[0.5], colors="red", linewidths=0.5)
            if "annotator" in m and m["annotator"].any():
                ax.contour(m["annotator"][::-1, :], levels=[0.5], colors="yellow", linewidths=0.4)
            ax.set_title(f"{row['case']} {r} z={e['rating_slices'][r]}\nage {e['age']:.0f} {e['sex']}  "
                         f"true {e['true_counts'][r]}  r1 {e['rater_counts']['rater1'][r]}  "
                         f"r2 {e['rater_counts']['rater2'][r]}", fontsize=7)
            ax.axis("off")
    hard = any("annotator" in row["montage"]["BG"] for row in order)
    fig.suptitle("PVS phantom: rating slices (red = PVS label, cyan = rating region)" if not hard else
                 "PVS phantom, hard profile: rating slices (red = exact PVS truth, yellow = annotator label, "
                 "cyan = rating region)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def _validate_args(out_dir: Path, n_subjects: int, seed: int, dataset_id: int, dataset_name: str,
                   age_min: float, age_max: float, n_jobs: int) -> None:
    if not isinstance(n_subjects, (int, np.integer)) or n_subjects < 1:
        raise MfnsInputError(f"--n-subjects must be >= 1, got {n_subjects}")
    if n_subjects > 999:
        raise MfnsInputError(f"--n-subjects must be <= 999 (case ids have 3 digits), got {n_subjects}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MfnsInputError(f"--seed must be a non-negative integer, got {seed}")
    if not 1 <= int(dataset_id) <= 999:
        raise MfnsInputError(f"--dataset-id must be in 1..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9]+", dataset_name or ""):
        raise MfnsInputError(f"--name must be letters and digits only, got {dataset_name!r}")
    if not (np.isfinite(age_min) and np.isfinite(age_max)) or age_min < 0 or age_max > 120:
        raise MfnsInputError(f"--age-min/--age-max must lie in 0..120, got {age_min}..{age_max}")
    if age_min >= age_max:
        raise MfnsInputError(f"--age-min ({age_min}) must be smaller than --age-max ({age_max})")
    if n_jobs < 1:
        raise MfnsInputError(f"--n-jobs must be >= 1, got {n_jobs}")
    out_dir = Path(out_dir)
    probe = out_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise MfnsInputError(f"output folder {out_dir}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise MfnsInputError(f"output folder {out_dir} is not writable")


def generate_cohort(out_dir: Path, n_subjects: int = 20, seed: int = 0, profile: str | Profile = "demo",
                    dataset_id: int = 501, dataset_name: str = "PVSPhantom", overwrite: bool = False,
                    n_jobs: int = 1, age_min: float = 42.0, age_max: float = 79.0, snr: float | None = None,
                    progress: bool = True) -> Path:
    """Writes the nnU-Net raw dataset `out_dir/DatasetXXX_Name` and returns its path.

    Everything is written into a temporary folder next to the target and renamed at the end, so a
    failed run leaves nothing half-written. Same arguments -> identical bytes.
    """
    out_dir = Path(out_dir)
    _validate_args(out_dir, n_subjects, seed, dataset_id, dataset_name, age_min, age_max, n_jobs)
    if snr is not None and (not np.isfinite(snr) or snr <= 0):
        raise MfnsInputError(f"--snr must be > 0, got {snr}")
    prof = get_profile(profile, **({"snr": float(snr)} if snr is not None else {}))
    folder = f"Dataset{int(dataset_id):03d}_{dataset_name}"
    target = out_dir / folder
    if target.exists() and not overwrite:
        raise MfnsInputError(f"output {target} exists; pass --overwrite to replace it")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MfnsInputError(f"output folder {out_dir} cannot be created: {e.strerror}") from None

    demo = make_demographics(n_subjects, seed, age_min, age_max)
    specs = [SubjectSpec(case_id=f"PVS_{i + 1:03d}", subject_id=f"sub-{i + 1:03d}", age=a, sex=s, seed=int(seed),
                         index=i) for i, (a, s) in enumerate(demo)]
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.tmp-", dir=out_dir))
    except OSError as e:
        raise MfnsInputError(f"output folder {out_dir} is not writable: {e.strerror}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the dataset should not be
    try:
        for sub in ("imagesTr", "labelsTr", "regions") + ((HARD_EXACT_DIR, HARD_CONFOUNDER_DIR)
                                                          if prof.name in HARD_PARAMS else ()):
            (tmp / sub).mkdir()
        from tqdm import tqdm

        jobs = [(s, prof, str(tmp)) for s in specs]
        if n_jobs == 1:
            it = map(_run_subject, jobs)
            rows = list(tqdm(it, total=len(jobs), desc="phantom subjects", unit="subject", disable=not progress))
        else:
            with ProcessPoolExecutor(max_workers=n_jobs) as ex:
                rows = list(tqdm(ex.map(_run_subject, jobs), total=len(jobs), desc="phantom subjects",
                                 unit="subject", disable=not progress))
        rows.sort(key=lambda r: r["case"])
        created_by = {
            "tool": "mfns-make-phantom", "version": _version(), "seed": int(seed),
            "args": {"n_subjects": int(n_subjects), "seed": int(seed), "profile": prof.to_dict(),
                     "dataset_id": int(dataset_id), "dataset_name": dataset_name, "age_min": float(age_min),
                     "age_max": float(age_max), "contrast": asdict(Contrast()), "pvs": _jsonable(asdict(PVSParams())),
                     "burden": asdict(BurdenModel()), "raters": raters_as_dict(DEFAULT_RATERS)},
        }
        if prof.name in HARD_PARAMS:
            created_by["args"]["hard"] = HARD_PARAMS[prof.name].to_dict()
        subjects = {"schema": SCHEMA, "dataset_name": folder, "created_by": created_by,
                    "slice_axis": "ITK index axis 2 (numpy axis 0 of sitk.GetArrayFromImage)",
                    "subjects": {r["case"]: r["entry"] for r in rows}}
        _dump(subjects, tmp / "subjects.json")
        _dump({"schema": "nnunetv2_mfns.phantom_truth/1", "subjects": {r["case"]: r["truth"] for r in rows}},
              tmp / "phantom_truth.json")
        from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

        generate_dataset_json(str(tmp), channel_names={0: "T2"}, labels={"background": 0, "PVS": 1},
                              num_training_cases=len(rows), file_ending=".nii.gz", dataset_name=folder,
                              description=f"Synthetic 3T T2w PVS phantom, profile {prof.name}, seed {seed}",
                              reference="nnunetv2-mfns docs/phantom.md", license="CC0 (synthetic)",
                              converted_by="mfns-make-phantom")
        write_montage(rows, tmp / "montage.png")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder}.old-", dir=out_dir))
            target.rename(old / folder)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (tuple, list)):
        return [_jsonable(v) for v in d]
    return d


def _dump(obj, path: Path) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")


def _version() -> str:
    from nnunetv2_mfns import __version__

    return __version__
