"""`mfns-predict` as a library call: scans in, masks, census and PVS burden reports out.

Order (so that bad input costs nothing and leaves nothing): find and check every scan (headers) and the
model -> refuse existing outputs unless overwrite -> (report) rating slices and regions of every scan
(`evaluation.rating_slices.locate_rating_slices`: a failed registration stops the run here, before any
prediction) -> stage the scans under nnU-Net names -> stock nnU-Net prediction -> per scan: census,
labelled components, rating categories, report -> batch census.csv, stats.csv, index.html.
Everything is written into a hidden temporary folder inside OUT and moved into place only at the end; on
any error the temporary folder is removed. The input files are only ever read.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.jsonio import write_json_atomic

from .inputs import ScanInput, collect_inputs, stage_inputs
from .model import ModelSpec
from .naming import BATCH_FILES, OutputPaths, bids_dataset_description, output_paths

logger = logging.getLogger(__name__)
TMP_PREFIX = ".mfns-predict-"


@dataclass
class PredictOptions:
    report: bool = True
    overwrite: bool = False
    device: str = "auto"
    tta: bool = True
    step_size: float = 0.5
    deformable: bool = False
    # {scan name: {"BG": i, "CSO": j}}; the key "*" applies to every scan without its own entry
    rating_slices: dict | None = None
    progress: bool = True


def _planned_outputs(scans: list[ScanInput], report: bool) -> tuple[dict[str, OutputPaths], list[Path]]:
    paths = {s.name: output_paths(s) for s in scans}
    rel = [p for op in paths.values() for p in op.all_paths(report)]
    if report:
        rel += [Path(b) for b in BATCH_FILES]
    if any(s.bids for s in scans):
        rel.append(Path("dataset_description.json"))
    return paths, rel


def _write_image(arr: np.ndarray, reference: sitk.Image, path: Path) -> None:
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.CopyInformation(reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def _move_into_place(tmp: Path, out: Path, skip: set[str]) -> None:
    for root, _dirs, files in os.walk(tmp):
        rel_root = Path(root).relative_to(tmp)
        if rel_root.parts and rel_root.parts[0] in skip:
            continue
        for f in files:
            dst = out / rel_root / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(root) / f, dst)


def _manual_for(options: PredictOptions, name: str) -> dict | None:
    rs = options.rating_slices or {}
    return rs.get(name, rs.get("*"))


def run_predict(inputs: list[str | Path], out_dir: str | Path, model: ModelSpec,
                options: PredictOptions | None = None) -> list[dict]:
    """Runs everything (see module docstring); returns one summary dict per scan (name, input, outputs)."""
    options = options or PredictOptions()
    out = Path(out_dir)
    scans = collect_inputs(inputs)
    unknown = sorted(set(options.rating_slices or {}) - {s.name for s in scans} - {"*"})
    if unknown:
        raise MfnsInputError(f"--rating-slices: no scan named {unknown[0]!r}")
    paths, planned = _planned_outputs(scans, options.report)
    if out.exists() and not out.is_dir():
        raise MfnsInputError(f"{out}: output path exists and is not a folder")
    inputs_real = {s.path.resolve() for s in scans}
    hit = next((p for p in planned if (out / p).resolve() in inputs_real), None)
    if hit is not None:  # never, not even with --overwrite, replace an input
        raise MfnsInputError(f"{out / hit}: this output would replace an input scan; choose another -o")
    if not options.overwrite:
        clash = next((p for p in planned if (out / p).exists()), None)
        if clash is not None:
            raise MfnsInputError(f"{out / clash}: output exists (use --overwrite to replace)")
    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out))
    try:
        summaries = _run(scans, paths, tmp, model, options)
        for s in scans:  # a replaced report folder must not keep files of the earlier run
            if options.report and (out / paths[s.name].report_dir).is_dir():
                shutil.rmtree(out / paths[s.name].report_dir)
        _move_into_place(tmp, out, skip={".staged", ".pred"})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_out and not any(out.iterdir()):
            out.rmdir()
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("%d scan(s) done: outputs in %s", len(scans), out)
    return summaries


def _run(scans: list[ScanInput], paths: dict[str, OutputPaths], tmp: Path, model: ModelSpec,
         options: PredictOptions) -> list[dict]:
    from nnunetv2_mfns import __version__ as version

    rating_info: dict[str, dict] = {}
    if options.report:
        from nnunetv2_mfns.evaluation.registration import read_t2w
        from nnunetv2_mfns.evaluation.rating_slices import locate_rating_slices
        for s in tqdm(scans, desc="rating slices", unit="scan", disable=not options.progress):
            img = read_t2w(s.path)
            res = locate_rating_slices(img, manual_slices=_manual_for(options, s.name), deformable=options.deformable,
                                       seed=0, source=str(s.path))
            for region, rel in paths[s.name].regions.items():
                arr = res.hemisphere if region == "hemisphere" else res.regions[region]
                _write_image(arr.astype(np.uint8), img, tmp / rel)
            rating_info[s.name] = res.summary()

    from .predictor import predict_staged
    staged = stage_inputs(scans, tmp / ".staged")
    pred_trunc = [tmp / ".pred" / f"scan_{i:04d}" for i in range(len(scans))]
    predict_staged(model, staged, pred_trunc, device=options.device, tta=options.tta, step_size=options.step_size,
                   progress=options.progress)
    for s, p in zip(scans, pred_trunc):
        dst = tmp / paths[s.name].mask
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p.with_name(p.name + ".nii.gz"), dst)

    model_line = (f"{model.dataset}/{model.folder.name}, folds {', '.join(map(str, model.folds))}, "
                  f"{model.checkpoint}")
    summaries = [{"name": s.name, "input": str(s.path), "mask": str(paths[s.name].mask)} for s in scans]
    if any(s.bids for s in scans):
        write_json_atomic(bids_dataset_description(version), tmp / "dataset_description.json")
    if not options.report:
        return summaries
    subjects = []
    for s, summ in tqdm(list(zip(scans, summaries)), desc="census and report", unit="scan",
                          disable=not options.progress):
        subjects.append(_report_one(s, paths[s.name], tmp, rating_info[s.name],
                                    {"input": str(s.path), "model": model_line, "mfns version": version}))
        summ["report"] = str(paths[s.name].report_dir / "report.html")
    from nnunetv2_mfns.evaluation.subject_report import write_batch
    write_batch(tmp, subjects)
    return summaries


def _report_one(scan: ScanInput, op: OutputPaths, tmp: Path, info: dict, meta: dict) -> dict:
    from nnunetv2_mfns.evaluation.census import pvs_census
    from nnunetv2_mfns.evaluation.rating_categories import rate_subject
    from nnunetv2_mfns.evaluation.registration import read_t2w
    from nnunetv2_mfns.evaluation.subject_report import build_subject_report

    img = read_t2w(scan.path)
    image = sitk.GetArrayFromImage(img).astype(np.float32)
    mask_img = sitk.ReadImage(str(tmp / op.mask))
    mask = sitk.GetArrayFromImage(mask_img) > 0
    regions = {r: sitk.GetArrayFromImage(sitk.ReadImage(str(tmp / p))) for r, p in op.regions.items()}
    hemi = regions.pop("hemisphere")
    direction = img.GetDirection()
    census = pvs_census(mask, img.GetSpacing(), direction, image=image, regions=regions, hemisphere=hemi,
                        origin=img.GetOrigin())
    labels_dtype = np.uint16 if census.labels.max(initial=0) < 65535 else np.int32
    _write_image(census.labels.astype(labels_dtype), img, tmp / op.components)
    slices = info.get("rating_slices") or {}
    ratings = rate_subject(mask, slices, regions, hemi, high_index_is_left=direction[0] >= 0)
    spacing_zyx = tuple(img.GetSpacing()[::-1])
    build_subject_report(tmp / op.report_dir, scan.name, image, mask, spacing_zyx, census, ratings, info, regions,
                         meta={**meta, "mask": str(op.mask), "components": str(op.components)},
                         superior_up=direction[8] >= 0)
    return {"name": scan.name, "report": op.report_dir / "report.html", "census": census, "ratings": ratings,
            "rating_info": info, "meta": {"input": meta["input"]}}
