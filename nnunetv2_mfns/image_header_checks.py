"""File-system, header and byte-stream checks of a NIfTI file (steps 1-3 of `nnunetv2_mfns.image_checks`).

Nothing here reads voxels into memory: `check_image_header` decides from the file system and the header
alone (so a header claiming an absurd size is refused before anything is allocated), and `_chunks` streams
the (decompressed) bytes for `image_checks.check_data_stream`. Torch-free, like its caller.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import logging
import math
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunetv2_mfns.errors import MfnsInputError

NIFTI_ENDINGS = (".nii.gz", ".nii")
# Largest volume any command reads: 2**30 voxels (4 GiB as float32) is ~8x a 0.5 mm whole-head scan
# (512 x 512 x 400); a header claiming more is corrupt or not a brain MRI, and is refused before allocating.
MAX_VOXELS = 2 ** 30
# sform and qform "agree" when they place every corner of the volume within this fraction of the smallest
# voxel edge of each other (float32 storage and quaternion rounding are ~1e-5 mm; a real disagreement is mm).
SFORM_QFORM_TOL_VOXELS = 0.1
# condition number of the 3x3 voxel-to-mm matrix above which it is numerically singular
MAX_AFFINE_CONDITION = 1e6
GZIP_CHUNK_BYTES = 4 << 20
GZIP_MAGIC = b"\x1f\x8b"


class ImageCheckError(MfnsInputError):
    """A refused image file; str() is the one-line message `<path>: <problem>`."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable, so that worker processes (mfns-evaluate --workers) can raise it
        return type(self), (str(self.path), self.problem)


@dataclass(frozen=True)
class ImageHeader:
    """What the header promises, after `check_image_header` (nibabel axis order x, y, z[, t])."""

    path: Path
    shape: tuple[int, ...]       # as stored, e.g. (x, y, z) or (x, y, z, t)
    n_volumes: int               # 1 for 3D files and 4D files with one volume
    dtype: np.dtype              # stored voxel type (before scl_slope/scl_inter)
    scaled: bool                 # scl_slope/scl_inter change the stored values
    zooms: tuple[float, float, float]  # voxel spacing in mm from pixdim
    data_offset: int             # byte offset of the voxels in the (uncompressed) file
    data_bytes: int              # bytes of voxel data the header promises

    @property
    def compressed(self) -> bool:
        return self.path.name.lower().endswith(".nii.gz")


def is_nifti_name(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_ENDINGS)


# ------------------------------------------------------------------------------------------ 1. file system


def check_image_file(path: str | Path, role: str = "image") -> Path:
    """The path names a regular, readable, non-empty file called `*.nii` / `*.nii.gz`; ImageCheckError otherwise."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageCheckError(path, f"{role} is a symbolic link loop") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                raise ImageCheckError(path, f"{role} is a broken symbolic link (to {os.readlink(path)}, "
                                            f"which does not exist)") from None
            raise ImageCheckError(path, f"{role} file does not exist") from None
        if e.errno == errno.EACCES:
            raise ImageCheckError(path, f"{role} cannot be read (permission denied)") from None
        raise ImageCheckError(path, f"{role} cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageCheckError(path, f"{role} is a directory, expected a NIfTI file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageCheckError(path, f"{role} is not a regular file (a device, pipe or socket)")
    if not is_nifti_name(path):
        raise ImageCheckError(path, f"{role} is not a NIfTI file (.nii or .nii.gz expected)")
    if st.st_size == 0:
        raise ImageCheckError(path, f"{role} is an empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except PermissionError:
        raise ImageCheckError(path, f"{role} cannot be read (permission denied)") from None
    except OSError as e:
        raise ImageCheckError(path, f"{role} cannot be read ({e.strerror})") from None
    gz_name = path.name.lower().endswith(".nii.gz")
    if gz_name and magic != GZIP_MAGIC:
        raise ImageCheckError(path, f"{role} is not a readable NIfTI (not gzip-compressed although "
                                    f"named .nii.gz), so it cannot be read as an image")
    if not gz_name and magic == GZIP_MAGIC:
        raise ImageCheckError(path, f"{role} is gzip-compressed but named .nii; rename it to .nii.gz")
    return path


# ------------------------------------------------------------------------------------------ 2. header


def check_image_header(path: str | Path, role: str = "image", *, volume_index: int | None = None,
                       volume_hint: str = "a 3D volume is required") -> ImageHeader:
    """File-system and header checks (steps 1-2 of the module docstring), reading no voxels.

    A 4D file with more than one volume is refused unless `volume_index` names one of its volumes;
    `volume_hint` completes that refusal (e.g. "pass --volume-index to select one")."""
    import nibabel as nib

    path = check_image_file(path, role)
    try:
        # nibabel's header check "repairs" some defects in memory (pixdim <= 0 becomes abs/1) and logs that:
        # quiet here, and the raw header is read below without the repair
        with _quiet_nibabel():
            img = nib.load(str(path))
            with nib.openers.ImageOpener(str(path)) as f:
                hdr = type(img.header).from_fileobj(f, check=False)
    except Exception as e:  # nibabel raises several types (ImageFileError, HeaderDataError, OSError, EOFError)
        if path.name.lower().endswith(".nii.gz"):
            for _ in _chunks(path, role, compressed=True):  # a stream broken inside the header: say
                pass                                           # truncated/corrupt, not "not a NIfTI"
        raise ImageCheckError(path, f"{role} is not a readable NIfTI ({_one_line(e)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageCheckError(path, f"{role} is not a readable NIfTI (nibabel reads it as {type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    dtype = np.dtype(img.get_data_dtype())

    # dimensions first: everything below is sized by them
    if any(s <= 0 for s in shape):
        raise ImageCheckError(path, f"{role} header has a non-positive dimension (size {shape})")
    n_voxels = math.prod(shape)
    if n_voxels > MAX_VOXELS:
        raise ImageCheckError(path, f"{role} header claims size {shape} = {n_voxels:.3g} voxels, more than the "
                                    f"{MAX_VOXELS:.3g} any scan has (corrupt header); refused before reading")
    if len(shape) < 3:
        raise ImageCheckError(path, f"{role} is {len(shape)}D; a 3D volume is required "
                                    f"({len(shape)}D image, size {shape})")
    components = math.prod(shape[4:]) if len(shape) > 4 else 1
    if dtype.fields is not None:  # RGB24 / RGBA32: one structured value per voxel
        components *= len(dtype.fields)
    if components > 1:
        raise ImageCheckError(path, f"{role} has {components} components per voxel (vector or RGB image); "
                                    f"a scalar image is required")
    if dtype.kind == "c":
        raise ImageCheckError(path, f"{role} has complex voxels ({dtype}); a real-valued image is required")
    if dtype.kind not in "biuf":
        raise ImageCheckError(path, f"{role} has voxels of type {dtype}; a numeric image is required")
    n_volumes = shape[3] if len(shape) > 3 else 1
    if n_volumes > 1:
        if volume_index is None:
            raise ImageCheckError(path, f"{role} is 4D with {n_volumes} volumes; {volume_hint} "
                                        f"(4D image, size {shape})")
        if not 0 <= volume_index < n_volumes:
            raise ImageCheckError(path, f"{role} is 4D with {n_volumes} volumes; --volume-index {volume_index} "
                                        f"is out of range")

    pixdim = [float(v) for v in np.asarray(hdr["pixdim"], dtype=np.float64)[1:4]]
    if not all(math.isfinite(v) and v > 0 for v in pixdim):
        raise ImageCheckError(path, f"{role} has voxel spacing {_fmt(pixdim)} mm in its header (pixdim); "
                                    f"every spacing must be positive and finite")
    _check_affines(path, role, hdr, shape[:3], min(pixdim))
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if math.isinf(slope) or (slope != 0 and not math.isnan(slope) and math.isinf(inter)):
        # slope 0 or NaN means "no scaling" in NIfTI; an infinite one turns every voxel into Inf/NaN
        raise ImageCheckError(path, f"{role} has an infinite intensity scaling (scl_slope {slope:g}, "
                                    f"scl_inter {inter:g})")

    offset = int(img.dataobj.offset)
    return ImageHeader(path=path, shape=shape, n_volumes=n_volumes, dtype=dtype,
                       scaled=_is_scaled(img), zooms=tuple(pixdim), data_offset=offset,
                       data_bytes=n_voxels * dtype.itemsize)


def _check_affines(path: Path, role: str, hdr, spatial_shape: tuple[int, ...], min_spacing: float) -> None:
    """Finite, non-singular sform/qform (those with a non-zero code), agreeing with each other if both set."""
    used = {}
    for name in ("sform", "qform"):
        try:
            affine, code = getattr(hdr, f"get_{name}")(coded=True)
        except Exception as e:
            raise ImageCheckError(path, f"{role} has an invalid {name} ({_one_line(e)})") from None
        if not code:
            continue
        affine = np.asarray(affine, dtype=np.float64)
        if not np.all(np.isfinite(affine)):
            raise ImageCheckError(path, f"{role} has a {name} with NaN/Inf entries")
        lin = affine[:3, :3]
        sv = np.linalg.svd(lin, compute_uv=False)
        if sv[-1] <= 0 or sv[0] / sv[-1] > MAX_AFFINE_CONDITION:
            raise ImageCheckError(path, f"{role} has a singular {name} (voxel axes do not span 3D space: "
                                        f"columns {_fmt(lin.T.ravel())}); its voxel positions are undefined")
        used[name] = (affine, int(code))
    if len(used) == 2:
        (s, scode), (q, qcode) = used["sform"], used["qform"]
        corners = np.array([[i, j, k, 1.0] for i in (0, spatial_shape[0] - 1) for j in (0, spatial_shape[1] - 1)
                            for k in (0, spatial_shape[2] - 1)]).T
        gap = float(np.max(np.linalg.norm((s @ corners - q @ corners)[:3], axis=0)))
        if gap > SFORM_QFORM_TOL_VOXELS * min_spacing:
            raise ImageCheckError(path, f"{role} has an sform (code {scode}) and a qform (code {qcode}) that place "
                                        f"voxels up to {gap:.3g} mm apart; tools disagree on which one to use, so "
                                        f"make them agree (e.g. fslorient -copysform2qform)")


def _is_scaled(img) -> bool:
    slope, inter = img.dataobj.slope, img.dataobj.inter
    return bool(slope != 1 or inter != 0)


def _chunks(path: Path, role: str, compressed: bool):
    """The (decompressed) bytes of a file in chunks; a gzip stream is read to its end, where Python's gzip
    module checks the end-of-stream marker, the CRC32 and the length of every member."""
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            while True:
                chunk = f.read(GZIP_CHUNK_BYTES)
                if not chunk:
                    return
                yield chunk
    except EOFError:
        raise ImageCheckError(path, f"{role} is truncated: the gzip stream ends before its end-of-stream marker "
                                    f"(an interrupted copy or download?)") from None
    except gzip.BadGzipFile as e:
        raise ImageCheckError(path, f"{role} is corrupt: {_one_line(e)} (gzip integrity check)") from None
    except zlib.error as e:
        raise ImageCheckError(path, f"{role} is corrupt: invalid compressed data ({_one_line(e)})") from None
    except OSError as e:
        raise ImageCheckError(path, f"{role} cannot be read ({_one_line(e)})") from None


@contextlib.contextmanager
def _quiet_nibabel():
    # nibabel.imageglobals.LoggingOutputSuppressor removes the handler, but the record then reaches
    # Python's last-resort stderr handler; disabling the logger keeps our one-line contract
    logger = logging.getLogger("nibabel.global")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:160]


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"
