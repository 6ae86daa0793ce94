"""The one checked way to read a NIfTI scan or mask, for every command of the project.

Neither SimpleITK nor nibabel refuses the files that real archives contain: ITK reads a `.nii.gz` cut off
at half its length and fills the missing half with zeros, and turns NaN and Inf voxels into 0 (ITK 5.4 /
SimpleITK 2.5, measured); nibabel stops reading at the end of the voxel data and so never checks the gzip
CRC. So before any use of a file, `read_checked` verifies, in this order (each step only reads what the
previous one has shown to be sane, so a corrupt header never makes us allocate its claimed size):

1. the file system: exists, not a broken link or link loop, a regular readable non-empty file named
   `.nii` or `.nii.gz`;
2. the header (nibabel, no voxels read): a NIfTI header; at most `MAX_VOXELS` voxels; 3D scalar (a 4D
   file with one volume counts as 3D; `volume_index` selects a volume of a real 4D file); positive finite
   voxel spacing; finite, non-singular sform/qform, and sform and qform agreeing where both are set;
   finite intensity scaling (scl_slope/scl_inter);
3. the data stream, in one pass: a `.nii.gz` decompresses to its end (gzip end-of-stream marker, CRC
   and length, checked by Python's gzip module), and the file holds exactly the voxel bytes the header
   promises;
4. the values, per `expect`: finite everywhere (counted on the stored values during step 3, since ITK
   hides them), and
   `"image"`: not constant; `"binary_mask"`: only 0 and 1; `"label"`: integer values (the caller
   decides which ones); `"region"`: non-negative integers;
5. the ITK read itself, which must give a 3D scalar image with positive spacing.

Every defect is an `ImageCheckError` (an `MfnsInputError`) whose message is one line `<file>: <problem>`;
`.path` and `.problem` let a converter collect the problems of a whole cohort (see
`dataset_conversion.validation.load_3d_image`). docs/input_checks.md lists every check and its message.

Steps 1-3 are in `image_header_checks`, re-exported here. Torch-free and nnU-Net-free on purpose: the evaluation, the converter and `mfns-predict`'s input checks
import it, and must start fast.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

# steps 1-3 (file system, header, byte stream) live in image_header_checks; part of this module's API
from nnunetv2_mfns.image_header_checks import (MAX_VOXELS, NIFTI_ENDINGS, ImageCheckError, ImageHeader, _chunks,
                                               _fmt, _one_line, check_image_file, check_image_header,
                                               is_nifti_name)

__all__ = ["MAX_VOXELS", "NIFTI_ENDINGS", "CheckedImage", "Expect", "ImageCheckError", "ImageHeader",
           "check_data_stream", "check_image_file", "check_image_header", "is_nifti_name", "read_checked",
           "read_checked_image", "value_problem"]

Expect = Literal["image", "binary_mask", "label", "region"]
EXPECTATIONS = ("image", "binary_mask", "label", "region")


@dataclass
class CheckedImage:
    """A file that passed every check: its 3D ITK image (one volume of a 4D file if one was selected)."""

    path: Path
    image: sitk.Image
    header: ImageHeader

    @functools.cached_property
    def array(self) -> np.ndarray:
        """The voxels, numpy axis order (z, y, x). A copy on purpose: a GetArrayViewFromImage view does not
        keep its image alive, so `read_checked(...).array` would point into freed memory."""
        return sitk.GetArrayFromImage(self.image)


# ------------------------------------------------------------------------------------------ 3. data stream


def check_data_stream(header: ImageHeader, role: str = "image", volume_index: int | None = None) -> int:
    """Reads the file once, in chunks (nothing kept): a `.nii.gz` must decompress to its end with a valid
    end-of-stream marker, CRC and length (Python's gzip module checks them there), and the file must hold
    exactly the voxel bytes its header promises. Returns the number of NaN/Inf voxels (of the selected
    volume of a 4D file), counted on the stored float values in the same pass: ITK's NIfTI reader turns
    NaN and Inf into 0, so its array never shows them (integer voxels are always finite)."""
    path = header.path
    need = header.data_offset + header.data_bytes
    first, last = header.data_offset, need  # byte range whose voxels are counted
    if volume_index is not None and header.n_volumes > 1:
        volume_bytes = header.data_bytes // header.n_volumes  # NIfTI order: x fastest, t slowest
        first, last = first + volume_index * volume_bytes, first + (volume_index + 1) * volume_bytes
    counter = _NonFiniteCounter(header.dtype, first, last) if header.dtype.kind == "f" else None
    have = 0
    for chunk in _chunks(path, role, header.compressed):
        if counter is not None:
            counter.add(chunk, have)
        have += len(chunk)
    if have != need:
        shape = "x".join(str(s) for s in header.shape)
        what = "decompressed file" if header.compressed else "file"
        if have < need:
            raise ImageCheckError(path, f"{role} is truncated: the {what} has {have} bytes but its header "
                                        f"({shape} voxels of {header.dtype}) needs {need}")
        raise ImageCheckError(path, f"{role} has {have - need} bytes more than its header ({shape} voxels of "
                                    f"{header.dtype}) accounts for: wrong dimensions or data type in the header")
    return counter.count if counter is not None else 0


class _NonFiniteCounter:
    """Counts NaN/Inf among the voxels stored in bytes [first, last) of a stream seen chunk by chunk."""

    def __init__(self, dtype: np.dtype, first: int, last: int) -> None:
        self.dtype, self.first, self.last = dtype, first, last
        self.carry = b""  # bytes of a voxel split between two chunks
        self.count = 0

    def add(self, chunk: bytes, start: int) -> None:
        lo, hi = max(self.first - start, 0), min(self.last - start, len(chunk))
        if lo >= hi:
            return
        buf = self.carry + chunk[lo:hi]
        n = len(buf) // self.dtype.itemsize * self.dtype.itemsize
        values = np.frombuffer(buf, dtype=self.dtype, count=n // self.dtype.itemsize)
        self.count += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.carry = buf[n:]


# ------------------------------------------------------------------------------------------ 4./5. values, ITK


def value_problem(array: np.ndarray, expect: Expect, role: str = "image") -> str | None:
    """What is wrong with the (finite) values of an array for its `expect`ed kind; None when they are fine."""
    if array.size == 0:
        return f"{role} has no voxels"
    lo, hi = array.min(), array.max()
    is_float = np.issubdtype(array.dtype, np.floating)
    if expect == "image":
        if lo == hi:
            return f"{role} is a constant image (every voxel is {_num(lo)}): no signal"
        return None
    if expect == "binary_mask":
        # max/min first: cheap, and all a uint8 mask needs; float masks also need every value to be 0 or 1
        if lo < 0 or hi > 1 or (is_float and np.any((array != 0) & (array != 1))):
            bad = np.unique(array[(array != 0) & (array != 1)])[:5]
            return (f"{role} has values other than 0/1 (e.g. {', '.join(_num(v) for v in bad)}); "
                    f"only binary PVS masks are accepted")
        return None
    if is_float:
        non_integer = array != np.round(array)
        if np.any(non_integer):
            shown = ", ".join(_num(v) for v in np.unique(array[non_integer])[:5])
            return f"{role} has non-integer values (e.g. {shown}); a label mask with integer values is required"
    if expect == "region" and lo < 0:
        return f"{role} has negative values (e.g. {_num(lo)}); a region mask is 0 outside, positive inside"
    return None


def read_checked(path: str | Path, role: str = "image", expect: Expect = "image", *,
                 volume_index: int | None = None, volume_hint: str = "a 3D volume is required") -> CheckedImage:
    """Every check of the module docstring, then the 3D ITK image; ImageCheckError (one line) on any defect.

    `expect`: "image" (a scan: finite, not constant), "binary_mask" (finite, only 0/1), "label" (finite,
    integer values; which values are allowed is the caller's rule) or "region" (non-negative integers).
    `volume_index` selects one volume of a 4D file (refused without it, see `check_image_header`)."""
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {EXPECTATIONS}, got {expect!r}")
    header = check_image_header(path, role, volume_index=volume_index, volume_hint=volume_hint)
    path = header.path
    n_bad = check_data_stream(header, role, volume_index)
    if n_bad:
        raise ImageCheckError(path, f"{role} contains {n_bad} NaN/Inf voxel(s)")
    image = _read_itk(header, role, volume_index)
    problem = value_problem(sitk.GetArrayViewFromImage(image), expect, role)
    if problem:
        raise ImageCheckError(path, problem)
    return CheckedImage(path=path, image=image, header=header)


def read_checked_image(path: str | Path, role: str = "image", expect: Expect = "image", *,
                       volume_index: int | None = None) -> sitk.Image:
    """`read_checked(...).image`: the checked 3D SimpleITK image."""
    return read_checked(path, role, expect, volume_index=volume_index).image


def _read_itk(header: ImageHeader, role: str, volume_index: int | None) -> sitk.Image:
    path = header.path
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ImageCheckError(path, f"{role} is not a readable NIfTI (ITK: {_one_line(e)})") from None
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        if size[3] == 1 or volume_index is not None:
            index = [0, 0, 0, volume_index if size[3] > 1 else 0]
            size[3] = 0  # size 0 on an axis makes Extract drop it and collapse the direction matrix to 3x3
            image = sitk.Extract(image, size=size, index=index)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageCheckError(path, f"{role} is read by ITK as a {image.GetDimension()}D image with "
                                    f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel; "
                                    f"a 3D scalar volume is required")
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ImageCheckError(path, f"{role} has voxel spacing {_fmt(spacing)} mm; every spacing must be "
                                    f"positive and finite")
    return image


def _num(v) -> str:
    return f"{float(v):g}"
