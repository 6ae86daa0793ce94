"""Acquisition model: output/fine grids, 2 mm slice-profile averaging, bias field, Rician noise, scaling.

The scanner is modelled as a 2D multi-slice T2w acquisition (STRIVE-2 style): each 2 mm axial slice is
the slice-profile-weighted average of several thin sub-slices of a finer simulation grid, and each
in-plane voxel the average of `inplane_os x inplane_os` fine voxels (partial volume). Noise is Rician
(magnitude of complex Gaussian), the receive field a smooth multiplicative bias, and the global scale
random -- MR intensities have no absolute unit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
from nnunetv2_mfns.errors import MfnsInputError


@dataclass(frozen=True)
class Profile:
    """Geometry and acquisition of one cohort profile.

    `slab`: "brain" covers the whole brain (slices centred on the cerebrum), "rating" places a slab so
    that both rating slices (BG and CSO) are inside with `slab_margin` slices of margin.
    """

    name: str
    inplane_mm: float
    matrix: tuple[int, int]  # (ny: anterior-posterior, nx: left-right)
    n_slices: int
    slice_mm: float = 2.0
    z_sub: int = 4  # fine sub-slices per acquired slice (0.5 mm for 2 mm slices)
    inplane_os: int = 1  # fine in-plane sub-voxels per output voxel for small objects
    tissue_z_sub: int = 2  # sub-slices at which the (smooth, 1 mm) tissue maps are sampled
    slab: str = "brain"
    slab_margin: int = 2
    fov_offset_mm: tuple[float, float] = (0.0, 0.0)  # in-plane (y, x) shift of the FOV centre
    snr: float = 40.0  # mean WM signal / noise SD of the complex Gaussian noise
    bias_strength: float = 0.15  # peak-to-peak fraction of the multiplicative receive field
    label_threshold: float = 0.2  # PVS volume fraction from which a voxel is labelled
    slice_profile: tuple[float, ...] = field(default=(0.7, 1.0, 1.0, 0.7))

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return (self.slice_mm, self.inplane_mm, self.inplane_mm)

    @property
    def fine_spacing_zyx(self) -> tuple[float, float, float]:
        return (self.slice_mm / self.z_sub, self.inplane_mm / self.inplane_os, self.inplane_mm / self.inplane_os)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["matrix"] = list(self.matrix)
        d["fov_offset_mm"] = list(self.fov_offset_mm)
        d["slice_profile"] = list(self.slice_profile)
        return d

    def validate(self) -> None:
        if self.snr <= 0 or not np.isfinite(self.snr):
            raise MfnsInputError(f"snr must be > 0, got {self.snr}")
        if self.inplane_mm <= 0 or self.slice_mm <= 0:
            raise MfnsInputError(f"spacing must be > 0, got in-plane {self.inplane_mm}, slice {self.slice_mm}")
        if min(self.matrix) < 16 or self.n_slices < 2 * self.slab_margin + 2:
            raise MfnsInputError(f"profile {self.name}: matrix {self.matrix} / n_slices {self.n_slices} too small")
        if len(self.slice_profile) != self.z_sub or min(self.slice_profile) < 0:
            raise MfnsInputError(f"profile {self.name}: slice_profile needs {self.z_sub} non-negative weights")
        if not 0 < self.label_threshold < 1:
            raise MfnsInputError(f"label_threshold must be in (0, 1), got {self.label_threshold}")
        if self.slab not in ("brain", "rating"):
            raise MfnsInputError(f"slab must be 'brain' or 'rating', got {self.slab!r}")
        if self.z_sub % self.tissue_z_sub:
            raise MfnsInputError("tissue_z_sub must divide z_sub")


PROFILES: dict[str, Profile] = {
    # Small enough for nnU-Net 2d and 3d_fullres on a 2-core CPU: 28 x 80 x 80 voxels (1.75 x 1.75 x
    # 2 mm), a slab from just below the AC to above the CSO rating slice; 140 mm FOV keeps the lateral
    # brain edge. Objects are simulated at 0.875 x 0.875 x 0.5 mm.
    "demo": Profile(name="demo", inplane_mm=1.75, matrix=(80, 80), n_slices=28, z_sub=4, inplane_os=2,
                    tissue_z_sub=2, slab="rating", slab_margin=2, fov_offset_mm=(-8.0, 0.0), snr=40.0),
    # CPU convergence study (issue 10): in-plane 0.9 mm, so a typical PVS (0.9-1.1 mm) is at least one
    # pixel wide and a long CSO PVS a line of several pixels; FOV 115.2 x 100.8 mm (128 x 112) around the
    # cerebrum centre: the deep brain of both rating slices (basal ganglia, centrum semiovale) without the
    # cortex and the lateral/frontal/occipital rim, because a training iteration's cost grows with the slice
    # area and the 192 x 160 whole-brain FOV (measured: MfNS_De 7.9 s, stock 3d_fullres 35 s per iteration)
    # did not fit the study's ~8 CPU hours; a 28-slice slab from just below the AC to above the CSO rating
    # slice (AC->CSO is 21-25 slices). Objects on a 0.45 x 0.45 x 0.5 mm grid. docs/phantom.md has the cost.
    "study": Profile(name="study", inplane_mm=0.9, matrix=(128, 112), n_slices=28, z_sub=4, inplane_os=2,
                     tissue_z_sub=2, slab="rating", slab_margin=2, fov_offset_mm=(-4.0, 0.0), snr=40.0),
    # Hard profile (issue 23): the study profile made as hard as a clinical scan. 128 x 128 pixels of 0.65 mm
    # (83 x 83 mm) over the LEFT hemisphere, from just right of the midline to beyond the lateral cortex
    # (the cortical rim, where sulcal false positives live, and the medial cortex are inside), 28 slices of
    # 2 mm like `study`; acquired at 0.9 mm and zero-filled to 0.65 mm in k-space (Gibbs ringing, motion),
    # deep-GM nuclei contrasts, flow voids, small lacunes, PVS touching WMH/lacunes and annotator-style
    # labels: hard.HardParams. Objects on a 0.325 x 0.325 x 0.5 mm grid.
    "hard": Profile(name="hard", inplane_mm=0.65, matrix=(128, 128), n_slices=28, z_sub=4, inplane_os=2,
                    tissue_z_sub=2, slab="rating", slab_margin=2, fov_offset_mm=(4.0, -33.0), snr=40.0),
    # Clinical 3T STRIVE-2 T2w: 0.5 mm in-plane (480 x 400, 240 x 200 mm FOV), 75 slices of 2 mm,
    # simulated on a 0.5 mm isotropic grid.
    "realistic": Profile(name="realistic", inplane_mm=0.5, matrix=(480, 400), n_slices=75, z_sub=4, inplane_os=1,
                         tissue_z_sub=2, slab="brain", slab_margin=2, fov_offset_mm=(0.0, 0.0), snr=40.0),
}


def get_profile(name: str | Profile, **overrides) -> Profile:
    if isinstance(name, Profile):
        prof = name
    else:
        if name not in PROFILES:
            raise MfnsInputError(f"--profile must be one of {sorted(PROFILES)}, got {name!r}")
        prof = PROFILES[name]
    if overrides:
        prof = replace(prof, **overrides)
    prof.validate()
    return prof


@dataclass(frozen=True)
class Grid:
    """Output grid in subject mm: voxel (k, j, i) has its centre at origin + (k, j, i) * spacing."""

    origin: np.ndarray  # (z, y, x) mm of voxel centre (0, 0, 0)
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]

    def centres(self, axis: int) -> np.ndarray:
        return self.origin[axis] + np.arange(self.shape[axis]) * self.spacing[axis]

    def sub_centres(self, axis: int, n_sub: int) -> np.ndarray:
        """Centres of `n_sub` equal sub-intervals of every voxel along `axis` (flattened, increasing)."""
        c = self.centres(axis)
        s = self.spacing[axis]
        off = (np.arange(n_sub) + 0.5) / n_sub * s - s / 2
        return (c[:, None] + off[None, :]).ravel()

    def index_of(self, pts: np.ndarray) -> np.ndarray:
        return np.floor((np.asarray(pts) - self.origin) / np.asarray(self.spacing) + 0.5).astype(int)

    def slice_of_z(self, z_mm: float) -> int:
        return int(np.floor((z_mm - self.origin[0]) / self.spacing[0] + 0.5))


def profile_average(fine: np.ndarray, weights: np.ndarray | None, n_sub_z: int, n_sub_xy: int) -> np.ndarray:
    """Fine (Z*n, Y*m, X*m) -> output (Z, Y, X): slice-profile weighted along z, box average in-plane."""
    z, y, x = fine.shape
    r = fine.reshape(z // n_sub_z, n_sub_z, y // n_sub_xy, n_sub_xy, x // n_sub_xy, n_sub_xy)
    w = np.ones(n_sub_z) if weights is None else np.asarray(weights, dtype=np.float64)
    w = (w / w.sum()).astype(np.float32)
    out = np.tensordot(r, w, axes=([1], [0]))  # (Z, Y, m, X, m)
    return out.mean(axis=(2, 4), dtype=np.float32)


def bias_field(shape: tuple[int, int, int], spacing: tuple[float, float, float], rng: np.random.Generator,
               strength: float, degree: int = 3) -> np.ndarray:
    """Smooth multiplicative receive field: random separable Legendre polynomial of total degree
    <= `degree` over the FOV, rescaled to a peak-to-peak of `strength` (evaluated term by term on
    broadcast 1-D axes, so it costs a few passes over the volume and no interpolation)."""
    from numpy.polynomial import legendre

    axes = [np.linspace(-1, 1, n) for n in shape]
    basis = [[legendre.legval(ax, np.eye(degree + 1)[d]) for d in range(degree + 1)] for ax in axes]
    field_ = np.zeros(shape, np.float32)
    for i in range(degree + 1):
        for j in range(degree + 1 - i):
            for k in range(degree + 1 - i - j):
                if i + j + k == 0:
                    continue
                c = rng.normal(0, 1.0 / (i + j + k))
                field_ += (c * basis[0][i][:, None, None] * basis[1][j][None, :, None]
                           * basis[2][k][None, None, :]).astype(np.float32)
    ptp = float(field_.max() - field_.min()) or 1.0
    return (1.0 + strength * (field_ - field_.mean()) / ptp).astype(np.float32)


def add_rician_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of (signal + complex Gaussian noise): the Rician noise of a magnitude MR image."""
    re = img + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    im = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.sqrt(re * re + im * im).astype(np.float32)
