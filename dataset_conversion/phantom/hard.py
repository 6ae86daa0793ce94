"""The `hard` profile's extra realism (issue 23): what makes the `study` phantom too easy, modelled.

- deep grey-matter nuclei with their own T2w contrast (caudate/putamen brighter than white matter,
  globus pallidus darker from its iron), from MNI-coordinate ellipsoids inside the template's deep GM;
- acquisition in k-space: the clean slice is Fourier transformed, truncated to the acquired matrix
  (~0.9 mm in-plane), shot-wise rigid motion applied as a phase ramp per phase-encoding line, complex
  Gaussian noise added, zero-filled back to the output matrix and reconstructed as a magnitude image
  (Gibbs ringing, the correlated noise of zero-filled clinical images, mild motion blur/ghosts);
- noise scaled with the acquired voxel volume (SNR is proportional to voxel volume at equal scan time);
- annotator-style labels: a per-subject label threshold on the PVS volume fraction (a dilation/erosion
  bias), an in-plane dilation for "thick painters", and faint or tiny PVS that the annotator missed;
  the exact truth is written separately (`labels_exact/`) and used for scoring;
- confounder maps: one uint8 bit field per subject (`confounders/`), so false positives can be
  attributed to their cause.

Every parameter is in `HardParams` and recorded in `subjects.json` (`created_by.args.hard`); the sources
are in docs/phantom.md ("The hard profile"). Random draws of these extras come from their own streams
(`hard_rngs`), so the other profiles' files stay byte-identical.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .anatomy import CORTEX, CSF, Template

# bit of each confounder type in confounders/PVS_NNN.nii.gz (a voxel may carry several)
CONFOUNDER_BITS: dict[str, int] = {"sulcus": 1, "lacune": 2, "wmh": 4, "flow_void": 8, "hyperintense": 16, "rim": 32}
# kind names used by confounders.py -> confounder type
KIND_TO_TYPE: dict[str, str] = {"sulcus": "sulcus", "lacune": "lacune", "wmh_periventricular": "wmh",
                                "wmh_deep": "wmh", "flow_void": "flow_void", "hyperintense_focus": "hyperintense"}
MAP_FRACTION = 0.2  # a voxel belongs to a confounder's map from this volume fraction on (like the PVS label)


@dataclass(frozen=True)
class HardParams:
    """Parameters of the hard profile's extras (docs/phantom.md has the sources)."""

    # deep-GM T2w intensities (PVSDRO units: WM 395, cortex 450, CSF 1152)
    caudate: float = 450.0
    putamen: float = 425.0
    pallidum: float = 335.0
    thalamus: float = 405.0
    # acquisition
    acq_inplane_mm: float = 0.9  # acquired in-plane resolution; zero-filled to the output grid
    snr_reference_voxel_mm3: float = 0.9 * 0.9 * 2.0  # profile.snr is the SNR of this acquired voxel
    motion_sd_mm: tuple[float, float] = (0.0, 0.4)  # per-subject SD of the shot displacements, uniform range
    echo_train_length: int = 16  # k-space lines per shot (interleaved TSE segments)
    # PVS
    # share of PVS seeded in/next to a WMH or lacune (overlap allowed); some land where only the other
    # end touches, or fail for lack of room next to the few WMH of a young subject and are placed elsewhere;
    # measured share of labelled PVS touching a WMH/lacune: docs/phantom.md (hard profile)
    touching_fraction: float = 0.45
    enlarged_fraction: float = 0.08  # share of PVS that are enlarged: width uniform in enlarged_width_mm
    enlarged_width_mm: tuple[float, float] = (2.0, 4.0)
    # confounders
    lacune_major_mm: tuple[float, float] = (2.0, 5.0)  # overlaps the enlarged PVS widths on purpose
    lacune_count: tuple[float, float] = (1.0, 4.0)  # Poisson(a0 + a1 * atrophy^2)
    flow_void_surface: float = 10.0  # Poisson mean of cortical/sulcal vessels (dark tubes in surface CSF)
    flow_void_deep: float = 6.0  # Poisson mean of deep (lenticulostriate/thalamostriate) flow voids
    flow_void_surface_width_mm: tuple[float, float] = (0.8, 2.0)
    flow_void_deep_width_mm: tuple[float, float] = (0.5, 1.0)
    flow_void_signal: float = 0.12  # intensity relative to WM (signal void)
    # annotator style
    annotator_threshold: float = 0.2  # median PVS-fraction threshold of the annotator's label
    annotator_threshold_log_sd: float = 0.5  # per-subject spread: < 0.2 dilates, > 0.2 erodes
    annotator_threshold_range: tuple[float, float] = (0.08, 0.5)
    annotator_dilate_prob: float = 0.25  # subjects painted one voxel thicker in-plane
    annotator_miss_faint_prob: float = 0.6  # a faint PVS (mean fluid signal < 0.55) is not painted
    annotator_miss_small_prob: float = 0.3  # a PVS of <= annotator_small_voxels exact voxels is not painted
    annotator_small_voxels: int = 2

    def to_dict(self) -> dict:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        d["nuclei_mni"] = NUCLEI_MNI
        d["rim"] = "tissue codes CSF (extra-cerebral and sulcal) and cortical GM"
        d["confounder_bits"] = CONFOUNDER_BITS
        return d


# where each deep nucleus is, in MNI mm (the template has no nucleus labels; checked on axial slices)
NUCLEI_MNI = {"pallidum": "ellipsoid centre |x| 19, y -3, z -1 mm, semi-axes 4.5 / 9 / 5.5 mm",
              "thalamus": "y < -8 mm and |x| < 22 mm", "caudate": "|x| < 18 mm, y >= -8 mm, z > -2 mm",
              "putamen": "the rest of the deep GM (lateral striatum, nucleus accumbens)"}


HARD_PARAMS: dict[str, HardParams] = {"hard": HardParams()}


def hard_rngs(seed: int, index: int) -> list[np.random.Generator]:
    """Four independent streams of the hard extras (confounders, PVS, acquisition, annotator); spawn key
    (2, i) is disjoint from the six streams every profile uses (spawn key (1, i))."""
    streams = np.random.SeedSequence(seed, spawn_key=(2, index)).spawn(4)
    return [np.random.default_rng(s) for s in streams]


_NUCLEI_CACHE: dict = {}


def nuclei_t2(tpl: Template, hp: HardParams) -> np.ndarray:
    """Template-space T2 intensity of the deep grey matter, nucleus by nucleus (smoothed 1 mm so the
    borders are partial-volume like the template's own maps). Cached per template and parameters."""
    key = (id(tpl), hp.caudate, hp.putamen, hp.pallidum, hp.thalamus)
    if key not in _NUCLEI_CACHE:
        _NUCLEI_CACHE.clear()
        _NUCLEI_CACHE[key] = _nuclei_t2(tpl, hp)
    return _NUCLEI_CACHE[key]


def _nuclei_t2(tpl: Template, hp: HardParams) -> np.ndarray:
    nz, ny, nx = tpl.shape
    z = (np.arange(nz) + tpl.origin[0])[:, None, None]
    y = (np.arange(ny) + tpl.origin[1])[None, :, None]
    ax = np.abs(np.arange(nx) + tpl.origin[2])[None, None, :]
    pallidum = ((ax - 19.0) / 4.5) ** 2 + ((y + 3.0) / 9.0) ** 2 + ((z + 1.0) / 5.5) ** 2 <= 1.0
    thalamus = (y < -8.0) & (ax < 22.0)
    caudate = (ax < 18.0) & (y >= -8.0) & (z > -2.0)
    t2 = np.where(pallidum, hp.pallidum, np.where(thalamus, hp.thalamus, np.where(caudate, hp.caudate, hp.putamen)))
    return ndimage.gaussian_filter(t2.astype(np.float32), 1.0)


def rim_mask(codes: np.ndarray) -> np.ndarray:
    return np.isin(codes, (CSF, CORTEX))


def snr_of_acquired_voxel(hp: HardParams, snr_reference: float, slice_mm: float) -> float:
    """SNR is proportional to the voxel volume (same scan time, same bandwidth)."""
    return float(snr_reference * hp.acq_inplane_mm ** 2 * slice_mm / hp.snr_reference_voxel_mm3)


def acquired_matrix(n_out: int, out_mm: float, acq_mm: float) -> int:
    """Acquired lines along one axis: the same FOV at the coarser acquired resolution (even number)."""
    n = int(round(n_out * out_mm / acq_mm))
    n -= n % 2
    return int(min(max(n, 2), n_out))


def kspace_acquire(clean: np.ndarray, out_mm: float, hp: HardParams, sigma_acq: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, dict]:
    """2D multi-slice acquisition of the noise-free slices `clean` (z, y, x) on the output grid.

    Phase encoding runs along y (anterior-posterior), lines acquired in `ceil(n_y / ETL)` interleaved
    shots; every shot has its own in-plane rigid displacement (shared by all slices: the shot of one TR
    covers every slice), a phase ramp on its lines. Complex noise of SD `sigma_acq` per voxel of the
    acquired-resolution image is added in k-space, the truncated k-space is zero-filled back to the output
    matrix and the magnitude taken (Rician); also returns the same acquisition without noise (for the
    oracle calibration). Zero-filling keeps the noise SD per voxel (sinc interpolation
    preserves variance), so the output voxel's SNR is that of the acquired voxel.
    """
    nz, ny, nx = clean.shape
    ky, kx = acquired_matrix(ny, out_mm, hp.acq_inplane_mm), acquired_matrix(nx, out_mm, hp.acq_inplane_mm)
    y0, x0 = ny // 2 - ky // 2, nx // 2 - kx // 2
    k = np.fft.fftshift(np.fft.fft2(clean.astype(np.float64), norm="ortho"), axes=(1, 2))[:, y0:y0 + ky, x0:x0 + kx]
    motion_sd = float(rng.uniform(*hp.motion_sd_mm))
    n_shots = int(np.ceil(ky / hp.echo_train_length))
    shifts = rng.normal(0.0, motion_sd, (n_shots, 2))  # (dy, dx) mm per shot
    shot_of_line = np.arange(ky) % n_shots
    fy = np.fft.fftshift(np.fft.fftfreq(ny, d=out_mm))[y0:y0 + ky]  # cycles per mm
    fx = np.fft.fftshift(np.fft.fftfreq(nx, d=out_mm))[x0:x0 + kx]
    d = shifts[shot_of_line]
    ramp = np.exp(-2j * np.pi * (fy[:, None] * d[:, 0:1] + fx[None, :] * d[:, 1:2]))
    k = k * ramp[None]
    sigma_k = sigma_acq / np.sqrt(ky * kx / (ny * nx))
    noise = sigma_k * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))

    def recon(kk: np.ndarray) -> np.ndarray:
        full = np.zeros((nz, ny, nx), np.complex128)
        full[:, y0:y0 + ky, x0:x0 + kx] = kk
        return np.abs(np.fft.ifft2(np.fft.ifftshift(full, axes=(1, 2)), norm="ortho")).astype(np.float32)

    img = recon(k + noise)
    noise_free = recon(k)
    info = {"acquired_matrix_yx": [ky, kx], "acquired_mm": [round(ny * out_mm / ky, 4), round(nx * out_mm / kx, 4)],
            "motion_sd_mm": round(motion_sd, 4), "n_shots": n_shots,
            "max_shot_displacement_mm": round(float(np.abs(shifts).max()) if n_shots else 0.0, 4)}
    return img, noise_free, info


def annotator_label(pvs_frac: np.ndarray, pvs_id: np.ndarray, faint: np.ndarray, hp: HardParams,
                    rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The label a human annotator would have painted: per-subject threshold (dilation/erosion bias),
    sometimes one voxel thicker in-plane, faint and tiny PVS left out. `pvs_id` holds 1 + the index of
    the PVS owning each voxel (0: none), `faint[i]` whether PVS i has a low fluid signal."""
    thr = float(np.clip(hp.annotator_threshold * np.exp(rng.normal(0, hp.annotator_threshold_log_sd)),
                        *hp.annotator_threshold_range))
    dilate = bool(rng.random() < hp.annotator_dilate_prob)
    n = len(faint)
    exact_sizes = np.bincount(pvs_id[pvs_frac >= 0.2].ravel(), minlength=n + 1)[1:] if n else np.zeros(0, int)
    u_faint, u_small = rng.random(n), rng.random(n)
    missed = (np.asarray(faint, bool) & (u_faint < hp.annotator_miss_faint_prob)) | \
             ((exact_sizes <= hp.annotator_small_voxels) & (u_small < hp.annotator_miss_small_prob))
    lab = pvs_frac >= thr
    if missed.any():
        lab &= ~np.isin(pvs_id, np.flatnonzero(missed) + 1)
    if dilate:
        kept = lab.copy()
        lab = ndimage.binary_dilation(lab, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
        lab &= ~(np.isin(pvs_id, np.flatnonzero(missed) + 1) & ~kept)  # never paint a missed PVS by dilation
    info = {"threshold": round(thr, 4), "dilated_inplane": dilate, "n_pvs": int(n),
            "n_missed": int(missed.sum()), "n_missed_faint": int((missed & np.asarray(faint, bool)).sum())}
    return lab.astype(np.uint8), info
