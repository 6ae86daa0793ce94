"""DICOM input for `mfns-predict`: a folder of DICOM series (one series per scan, any file names).

Series are found with GDCM through SimpleITK (`ImageSeriesReader.GetGDCMSeriesIDs`, every sub-folder;
a file counts as DICOM when it carries the `DICM` preamble) and checked from their header tags before
any voxel is read; a series of the wrong kind is refused by name (one line, exit 2):
    * not T2-weighted: series description naming another contrast (T1, FLAIR, DWI, SWI, PD, ...),
      an inversion time (FLAIR / STIR), echo time under `MIN_TE_MS` or repetition time under `MIN_TR_MS`;
    * not axial: slice normal (cross product of ImageOrientationPatient's row and column) more than
      45 degrees from superior-inferior.
Accepted series are read with GDCM's series reader (slices ordered by position, geometry in LPS) and kept
in OUT/converted/<name>.nii.gz with a JSON sidecar (BIDS-style keys: SeriesDescription, EchoTime and
RepetitionTime in seconds, ImageOrientationPatientDICOM, ...). The scan's name is its folder's path
below the INPUT folder ("_" for "/"), with "_s<series number>" when a folder holds several series.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_mfns.errors import MfnsInputError

MIN_TE_MS = 60.0  # T2w turbo spin echo: TE ~80-120 ms; T1w / PD are far below
MIN_TR_MS = 1500.0
MAX_TILT_DEG = 45.0
OTHER_CONTRAST = re.compile(r"(?<![a-z0-9])(t1|t1w|mprage|spgr|flair|dwi|dti|adc|swi|pd|pdw|stir|tof|bold|"
                            r"localizer|scout|survey)(?![a-z0-9])", re.IGNORECASE)
TAGS = {"SeriesDescription": "0008|103e", "EchoTime": "0018|0081", "RepetitionTime": "0018|0080",
        "InversionTime": "0018|0082", "ImageOrientationPatient": "0020|0037", "SeriesNumber": "0020|0011",
        "SeriesInstanceUID": "0020|000e", "Modality": "0008|0060", "SliceThickness": "0018|0050",
        "MagneticFieldStrength": "0018|0087", "Manufacturer": "0008|0070"}


@dataclass
class DicomSeries:
    name: str
    folder: Path
    files: list[str]
    tags: dict


def is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_folder(folder: Path) -> bool:
    """True if the folder (or a sub-folder) holds DICOM files and no NIfTI file at its top level."""
    if any(f.name.lower().endswith((".nii", ".nii.gz")) for f in folder.iterdir() if f.is_file()):
        return False
    for root, _dirs, files in os.walk(folder):
        if any(is_dicom(Path(root) / f) for f in sorted(files)[:5]):
            return True
    return False


def _tags(first_file: str) -> dict:
    r = sitk.ImageFileReader()
    r.SetFileName(first_file)
    r.SetImageIO("GDCMImageIO")
    r.ReadImageInformation()
    return {k: r.GetMetaData(t).strip() for k, t in TAGS.items() if r.HasMetaDataKey(t)}


def _float(tags: dict, key: str) -> float | None:
    try:
        return float(tags[key].split("\\")[0])
    except (KeyError, ValueError):
        return None


def check_series(s: DicomSeries) -> None:
    """Refuses a series that is not an axial T2w acquisition (MfnsInputError naming it)."""
    where = f"{s.folder} (DICOM series {s.name!r}, '{s.tags.get('SeriesDescription', '')}')"
    desc = s.tags.get("SeriesDescription", "")
    m = OTHER_CONTRAST.search(desc.replace("_", " ").replace("-", " "))
    if m and "t2" not in desc.lower().replace("flair", ""):
        raise MfnsInputError(f"{where}: not a T2-weighted series (description names {m.group(1)})")
    te, tr, ti = _float(s.tags, "EchoTime"), _float(s.tags, "RepetitionTime"), _float(s.tags, "InversionTime")
    if ti is not None and ti > 0:
        raise MfnsInputError(f"{where}: inversion-recovery series (TI {ti:g} ms, FLAIR/STIR), not a plain T2w")
    if te is not None and te < MIN_TE_MS:
        raise MfnsInputError(f"{where}: not T2-weighted (echo time {te:g} ms < {MIN_TE_MS:g} ms)")
    if tr is not None and tr < MIN_TR_MS:
        raise MfnsInputError(f"{where}: not T2-weighted (repetition time {tr:g} ms < {MIN_TR_MS:g} ms)")
    try:
        iop = np.array([float(v) for v in s.tags["ImageOrientationPatient"].split("\\")], dtype=float)
        normal = np.cross(iop[:3], iop[3:6])
        normal /= max(np.linalg.norm(normal), 1e-12)
    except (KeyError, ValueError, IndexError):
        raise MfnsInputError(f"{where}: no usable ImageOrientationPatient (0020,0037)") from None
    tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
    if tilt > MAX_TILT_DEG:
        kind = "sagittal" if abs(normal[0]) >= abs(normal[1]) else "coronal"
        raise MfnsInputError(f"{where}: not an axial series (slices {tilt:.0f} deg from axial, looks {kind})")


def find_series(folder: Path) -> list[DicomSeries]:
    """Every DICOM series below `folder`, named and checked (see the module doc)."""
    found: list[DicomSeries] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if not any(is_dicom(Path(root) / f) for f in files):
            continue  # GDCM would warn on stderr about a folder without series
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(root)
        for sid in ids:
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, sid))
            if not files:
                continue
            tags = _tags(files[0])
            rel = Path(root).relative_to(folder)
            base = "_".join(rel.parts) if rel.parts else folder.name
            name = base if len(ids) == 1 else f"{base}_s{tags.get('SeriesNumber', sid[-6:])}"
            found.append(DicomSeries(re.sub(r"[^A-Za-z0-9._ -]", "_", name), Path(root), files, tags))
    if not found:
        raise MfnsInputError(f"{folder}: no readable DICOM series")
    for s in found:
        check_series(s)
    return found


def convert(s: DicomSeries, dest: Path) -> Path:
    """Reads the series (GDCM) into dest/<name>.nii.gz with a JSON sidecar; returns the NIfTI path."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(s.files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise MfnsInputError(f"{s.folder}: DICOM series {s.name!r} cannot be read "
                             f"({str(e).strip().splitlines()[-1][:120]})") from None
    dest.mkdir(parents=True, exist_ok=True)
    nii = dest / f"{s.name}.nii.gz"
    sitk.WriteImage(img, str(nii), useCompression=True)
    side = {"SeriesDescription": s.tags.get("SeriesDescription"), "Modality": s.tags.get("Modality"),
            "SeriesNumber": s.tags.get("SeriesNumber"), "SeriesInstanceUID": s.tags.get("SeriesInstanceUID"),
            "Manufacturer": s.tags.get("Manufacturer"), "MagneticFieldStrength": _float(s.tags, "MagneticFieldStrength"),
            "EchoTime": None if _float(s.tags, "EchoTime") is None else _float(s.tags, "EchoTime") / 1000.0,
            "RepetitionTime": None if _float(s.tags, "RepetitionTime") is None else _float(s.tags, "RepetitionTime") / 1000.0,
            "SliceThickness": _float(s.tags, "SliceThickness"),
            "ImageOrientationPatientDICOM": [float(v) for v in s.tags.get("ImageOrientationPatient", "").split("\\") if v],
            "SourceFolder": str(s.folder), "NumberOfFiles": len(s.files),
            "ConversionSoftware": f"SimpleITK {sitk.Version_VersionString()} ImageSeriesReader (GDCM)"}
    (dest / f"{s.name}.json").write_text(json.dumps({k: v for k, v in side.items() if v is not None}, indent=2) + "\n")
    return nii


def convert_inputs(items: list[str | Path], stage: Path) -> tuple[list[str | Path], list[Path]]:
    """INPUT items with every DICOM folder replaced by its series converted into `stage`; also returns the
    converted NIfTI paths (moved to OUT/converted by the caller once every check has passed)."""
    out: list[str | Path] = []
    converted: list[Path] = []
    series_by_item = []
    for item in items:
        p = Path(item)
        series_by_item.append(find_series(p) if p.is_dir() and is_dicom_folder(p) else None)
    for item, series in zip(items, series_by_item):  # every series checked before any is converted
        if series is None:
            out.append(item)
            continue
        for s in series:
            nii = convert(s, stage)
            out.append(nii)
            converted.append(nii)
    return out, converted


def keep_converted(converted: list[Path], dest: Path) -> dict[Path, Path]:
    """Moves converted scans (+ sidecars) to dest; an identical file already there is kept untouched
    (a rerun must not change a finished scan's input). Returns {staged path: kept path}."""
    dest.mkdir(parents=True, exist_ok=True)
    moved = {}
    for nii in converted:
        for src in (nii, nii.with_name(nii.name[:-len(".nii.gz")] + ".json")):
            dst = dest / src.name
            if dst.is_file() and dst.read_bytes() == src.read_bytes():
                src.unlink()
            else:
                shutil.move(str(src), str(dst))
        moved[nii] = dest / nii.name
    return moved
