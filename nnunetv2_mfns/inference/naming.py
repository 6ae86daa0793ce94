"""Where `mfns-predict` puts each output, relative to the output folder OUT.

Plain input (file `my scan.nii`, name `my scan`):
    masks/my scan.nii.gz                     PVS mask (uint8 0/1, the input's geometry)
    components/my scan_components.nii.gz     labelled PVS components (id = census row)
    regions/my scan_<BG|CSO|WM|brain|hemisphere>.nii.gz   rating regions and hemispheres (with the report)
BIDS input (`sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz`) follows BIDS-Derivatives naming in the same folders:
    sub-01/ses-1/anat/sub-01_ses-1_desc-PVS_mask.nii.gz
    sub-01/ses-1/anat/sub-01_ses-1_desc-PVScomponents_dseg.nii.gz
    sub-01/ses-1/anat/sub-01_ses-1_label-<BG|CSO|WM|brain>_mask.nii.gz, ..._desc-hemisphere_dseg.nii.gz
    dataset_description.json (DatasetType "derivative")
Both: reports/<name>/report.html (+ figures, census.csv, summary.json), and for the batch census.csv,
stats.csv, index.html at the top of OUT.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .inputs import ScanInput

BATCH_FILES = ("census.csv", "stats.csv", "index.html")
REGION_FILES = ("BG", "CSO", "WM", "brain", "hemisphere")


@dataclass(frozen=True)
class OutputPaths:
    """Paths relative to OUT."""
    mask: Path
    components: Path
    regions: dict
    report_dir: Path

    def all_paths(self, with_report: bool) -> list[Path]:
        paths = [self.mask]
        if with_report:
            paths += [self.components, *self.regions.values(), self.report_dir]
        return paths


def output_paths(scan: ScanInput) -> OutputPaths:
    report_dir = Path("reports") / scan.name
    if scan.bids is None:
        return OutputPaths(mask=Path("masks") / f"{scan.name}.nii.gz",
                           components=Path("components") / f"{scan.name}_components.nii.gz",
                           regions={r: Path("regions") / f"{scan.name}_{r}.nii.gz" for r in REGION_FILES},
                           report_dir=report_dir)
    d, pre = Path(scan.bids["anat_dir"]), scan.bids["prefix"]
    regions = {r: d / f"{pre}_label-{r}_mask.nii.gz" for r in REGION_FILES if r != "hemisphere"}
    regions["hemisphere"] = d / f"{pre}_desc-hemisphere_dseg.nii.gz"
    return OutputPaths(mask=d / f"{pre}_desc-PVS_mask.nii.gz", components=d / f"{pre}_desc-PVScomponents_dseg.nii.gz",
                       regions=regions, report_dir=report_dir)


def bids_dataset_description(version: str) -> dict:
    """dataset_description.json of the BIDS-Derivatives output."""
    return {"Name": "PVS segmentation (nnunetv2-mfns)", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "nnunetv2-mfns mfns-predict", "Version": version}]}
