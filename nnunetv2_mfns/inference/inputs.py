"""Finding the scans a user points `mfns-predict` at, and refusing the ones the model must not see.

INPUT may be a BIDS folder (`sub-*/[ses-*/]anat/*_T2w.nii[.gz]`), a folder of `.nii` / `.nii.gz` files with any
names (top level only, hidden files skipped), or single files. Each scan gets a name for its outputs: the
file name without `.nii[.gz]` and without a trailing nnU-Net channel suffix `_0000`, or for BIDS input its
entities without the `_T2w` suffix (e.g. `sub-01_ses-1_acq-hr`). Two scans with one name are an error.

Checks, before anything is predicted: every scan is read once through the project's checked reader
(`nnunetv2_mfns.image_checks.read_checked`: complete gzip stream, sane header and affine, finite and
non-constant values; a bad file stops the run at the start, naming it), then its geometry:
    * 3D scalar volume with at least 3 voxels along every axis, 4D refused, axial slice axis (ITK index
      axis 2 = numpy axis 0 within 45 deg of superior-inferior): the rating-slice finder's own rule,
      `evaluation.registration.check_axial_geometry`, applied to the header (ITK's NIfTI reader, like
      nnU-Net, reads a 4D file holding one volume as 3D);
    * orientation: index axis 0 must run left-right and index axis 1 anterior-posterior (axes swapped in-plane
      would present the model with transposed slices); flips are fine;
    * acquisition: no in-plane voxel edge more than ANISOTROPY_TOL x the slice spacing (thick slices along an
      in-plane axis mean a sagittal or coronal acquisition resampled into an axial header).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.evaluation.registration import check_axial_geometry
from nnunetv2_mfns.image_checks import read_checked_image

ANISOTROPY_TOL = 1.25
NIFTI_ENDINGS = (".nii.gz", ".nii")
BIDS_T2W = re.compile(r"^(sub-[A-Za-z0-9]+(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*)_T2w\.nii(?:\.gz)?$")


@dataclass
class ScanHeader:
    """Geometry read from the file header (ITK order x, y, z)."""
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]


@dataclass
class ScanInput:
    """One scan to predict. `bids`: {"subject", "session", "anat_dir" (relative), "prefix"} for BIDS input."""
    path: Path
    name: str
    bids: dict | None = None
    header: ScanHeader | None = field(default=None, repr=False)


def nifti_stem(path: Path) -> str | None:
    """File name without `.nii` / `.nii.gz` (case-insensitive), None for other files."""
    low = path.name.lower()
    for end in NIFTI_ENDINGS:
        if low.endswith(end) and len(path.name) > len(end):
            return path.name[:-len(end)]
    return None


def output_name(path: Path) -> str:
    stem = nifti_stem(path)
    if stem is None:
        raise MfnsInputError(f"{path}: not a NIfTI file (.nii or .nii.gz)")
    # nnU-Net-style inputs (case_0000.nii.gz) keep nnU-Net's output name (case.nii.gz)
    return stem[:-5] if stem.endswith("_0000") and len(stem) > 5 else stem


def read_header(path: Path) -> ScanHeader:
    """Geometry of one scan after the checks in the module docstring; MfnsInputError names the file."""
    img = read_checked_image(path, "T2w scan", "image")  # the whole file, verified (see module docstring)
    size = tuple(int(s) for s in img.GetSize())
    check_axial_geometry(str(path), img.GetDimension(), size, img.GetNumberOfComponentsPerPixel(), img.GetDirection())
    spacing = tuple(float(s) for s in img.GetSpacing())
    d = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    cols = d / np.maximum(np.linalg.norm(d, axis=0, keepdims=True), 1e-12)
    if abs(cols[0, 0]) < abs(cols[1, 0]) or abs(cols[1, 1]) < abs(cols[0, 1]):
        raise MfnsInputError(f"{path}: wrongly oriented: in-plane index axes swapped (index axis 0 should run "
                             f"left-right, axis 1 anterior-posterior); reorient it (e.g. fslreorient2std)")
    if max(spacing[0], spacing[1]) > ANISOTROPY_TOL * spacing[2]:
        raise MfnsInputError(f"{path}: voxel {spacing[0]:g} x {spacing[1]:g} x {spacing[2]:g} mm is thickest in-plane: "
                             f"a non-axial acquisition stored as axial; give the scan as acquired (axial slices)")
    return ScanHeader(size, spacing, tuple(float(o) for o in img.GetOrigin()), tuple(d.ravel().tolist()))


def _is_bids(folder: Path) -> bool:
    return (folder / "dataset_description.json").is_file() or any(
        p.is_dir() and p.name.startswith("sub-") for p in folder.iterdir())


def _bids_scans(folder: Path) -> list[ScanInput]:
    scans = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("sub-")):
        anat_dirs = [sub / "anat"] + sorted(s / "anat" for s in sub.iterdir() if s.is_dir() and s.name.startswith("ses-"))
        for anat in anat_dirs:
            if not anat.is_dir():
                continue
            for f in sorted(anat.iterdir()):
                m = BIDS_T2W.match(f.name)
                if not m or not (f.is_file() or f.is_symlink()):  # a broken link is refused, not skipped
                    continue
                prefix = m.group(1)
                ents = dict(kv.split("-", 1) for kv in prefix.split("_"))
                if ents.get("sub") != sub.name[4:]:
                    raise MfnsInputError(f"{f}: file name's subject does not match its folder {sub.name}")
                scans.append(ScanInput(f, prefix, {"subject": ents["sub"], "session": ents.get("ses"),
                                                   "anat_dir": str(anat.relative_to(folder)), "prefix": prefix}))
    if not scans:
        raise MfnsInputError(f"{folder}: BIDS folder without any sub-*/[ses-*/]anat/*_T2w.nii[.gz] scan")
    return scans


def collect_inputs(items: list[str | Path]) -> list[ScanInput]:
    """All scans named by the INPUT arguments, in argument order (folders sorted), headers checked."""
    if not items:
        raise MfnsInputError("no INPUT given")
    scans: list[ScanInput] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            if _is_bids(p):
                scans += _bids_scans(p)
                continue
            files = sorted(f for f in p.iterdir() if (f.is_file() or f.is_symlink()) and not f.name.startswith(".")
                           and nifti_stem(f))  # a broken link or link loop is refused by read_header, not skipped
            if not files:
                raise MfnsInputError(f"{p}: folder contains no .nii or .nii.gz file (and is not a BIDS folder)")
            scans += [ScanInput(f, output_name(f)) for f in files]
        elif p.is_file() or p.is_symlink():
            scans.append(ScanInput(p, output_name(p)))
        else:
            raise MfnsInputError(f"{p}: input not found")
    seen: dict[str, Path] = {}
    by_file: dict[Path, Path] = {}
    for s in scans:
        real = Path(os.path.realpath(s.path))  # not Path.resolve(): it raises on a link loop
        if real in by_file:
            raise MfnsInputError(f"{s.path}: given twice (also as {by_file[real]})")
        by_file[real] = s.path
        if s.name in seen:
            raise MfnsInputError(f"{s.path}: same output name {s.name!r} as {seen[s.name]}; rename one of them")
        seen[s.name] = s.path
    for s in scans:
        s.header = read_header(s.path)
    return scans


def stage_inputs(scans: list[ScanInput], stage_dir: Path) -> list[Path]:
    """nnU-Net input files for the scans in stage_dir (`scan_0000_0000.nii[.gz]`, ...): symbolic links to the
    untouched originals (a copy where links are impossible)."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    staged = []
    for i, s in enumerate(scans):
        ending = ".nii.gz" if s.path.name.lower().endswith(".nii.gz") else ".nii"
        dst = stage_dir / f"scan_{i:04d}_0000{ending}"
        try:
            os.symlink(s.path.resolve(), dst)
        except OSError:
            shutil.copyfile(s.path, dst)
        staged.append(dst)
    return staged
