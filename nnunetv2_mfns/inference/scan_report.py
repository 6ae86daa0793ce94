"""One scan's regions, census, labelled components and report, written atomically into OUT.

The report folder is built in the scan's work folder and renamed into `reports/<name>` as a whole. Returns
what the done-marker keeps for the cohort merge (census totals, ratings, rating-slice information, the
stats.csv metadata), so that the merge never re-reads images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_mfns.evaluation.io import write_image_atomic

from .naming import OutputPaths
from .scan_state import place_folder

BATCH_META = ("input", "rating slices", "mask post-processing")  # metadata that becomes stats.csv columns


def report_one(name: str, img: sitk.Image, mask: np.ndarray, rating, op: OutputPaths, out: Path, work: Path,
               meta: dict) -> dict:
    from nnunetv2_mfns.evaluation.census import pvs_census
    from nnunetv2_mfns.evaluation.rating_categories import rate_subject
    from nnunetv2_mfns.evaluation.subject_report import build_subject_report

    image = sitk.GetArrayFromImage(img).astype(np.float32)
    direction = img.GetDirection()
    if rating is not None:
        regions = {k: v for k, v in rating.regions.items()}
        hemi = rating.hemisphere
        for region, rel in op.regions.items():
            write_image_atomic((hemi if region == "hemisphere" else regions[region]).astype(np.uint8), img, out / rel)
        info = rating.summary()
    else:  # registration failed: census without regions, no rating slices
        regions, hemi = None, None
        info = {"rating_slices": {}, "slice_source": {}, "automatic_slices": {},
                "registration": {"ok": False, "transform": "failed", "ncc_after": None},
                "not_found": meta.get("rating slices")}
    census = pvs_census(mask > 0, img.GetSpacing(), direction, image=image, regions=regions, hemisphere=hemi,
                        origin=img.GetOrigin())
    labels_dtype = np.uint16 if census.labels.max(initial=0) < 65535 else np.int32
    write_image_atomic(census.labels.astype(labels_dtype), img, out / op.components)
    ratings = rate_subject(mask > 0, info.get("rating_slices") or {}, regions or {}, hemi,
                           high_index_is_left=direction[0] >= 0)
    build = work / "report"
    build_subject_report(build, name, image, mask > 0, tuple(img.GetSpacing()[::-1]), census, ratings, info,
                         regions or {}, meta={**meta, "mask": str(op.mask), "components": str(op.components)},
                         superior_up=direction[8] >= 0)
    place_folder(build, out / op.report_dir)
    return {"report": str(op.report_dir / "report.html"), "census_stats": census.stats, "ratings": ratings,
            "rating_info": info, "batch_meta": {k: meta[k] for k in BATCH_META if k in meta}}
