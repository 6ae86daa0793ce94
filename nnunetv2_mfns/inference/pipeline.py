"""`mfns-predict` as a library call: scans in, masks, census and PVS burden reports out, one scan at a time.

Order: find and check every scan (headers) and the model (bad input: one line, exit 2, nothing written)
-> keep this part's share of the scans (`num_parts` / `part_id`, like `nnUNetv2_predict`) -> skip scans that
are already done (`scan_state`: done-marker with the same input digest and settings) -> load the model once
-> per scan: rating slices and regions (registration; a failure is recorded, "rating slices: not found
(reason)", and the scan still gets its mask and census), prediction, threshold / minimum size, census,
labelled components, rating categories, report; every file written atomically, the done-marker last ->
cohort files (census.csv, stats.csv, index.html) merged from every finished scan in OUT (`cohort_merge`;
a sharded part leaves that to `mfns-predict --merge`). A scan that fails in any step is listed and the
run goes on. Memory is bounded by one scan. The input files are only ever read.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_mfns.errors import MfnsInputError, output_folder_problem
from nnunetv2_mfns.evaluation.io import write_image_atomic
from nnunetv2_mfns.jsonio import write_json_atomic

from . import dicom, postprocess, scan_state
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
    threshold: float | None = None
    min_size: postprocess.MinSize | None = None
    num_parts: int = 1
    part_id: int = 0


@dataclass
class RunResult:
    """`done`: summaries of the scans finished in this run; `skipped`: names already done before;
    `attention`: {name: reason} for scans done without rating slices; `failed`: {name: reason}."""
    done: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    attention: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    merged: bool = False


def _settings(model: ModelSpec, options: PredictOptions) -> dict:
    return {"model": str(model.folder.resolve()), "folds": list(map(str, model.folds)), "checkpoint": model.checkpoint,
            "report": options.report, "threshold": options.threshold,
            "min_size": None if options.min_size is None else str(options.min_size), "tta": options.tta,
            "step_size": options.step_size, "deformable": options.deformable}


def _manual_for(options: PredictOptions, name: str) -> dict | None:
    rs = options.rating_slices or {}
    return rs.get(name, rs.get("*"))


def select_part(scans: list[ScanInput], num_parts: int, part_id: int) -> list[tuple[int, ScanInput]]:
    """(index in the whole cohort, scan) of one part: every num_parts-th scan from part_id (nnU-Net's rule)."""
    return list(enumerate(scans))[part_id::num_parts]


def run_predict(inputs: list[str | Path], out_dir: str | Path, model: ModelSpec,
                options: PredictOptions | None = None) -> RunResult:
    """Runs everything (see module docstring); DICOM folders among `inputs` are converted first (`dicom`)."""
    options = options or PredictOptions()
    out = Path(out_dir)
    problem = output_folder_problem(out)  # also a file where a parent folder would be created
    if problem:
        raise MfnsInputError(f"{out}: {problem}")
    stage = Path(tempfile.mkdtemp(prefix="mfns-dicom-"))  # DICOM series converted here until every check passed
    try:
        return _run_checked(inputs, out, model, options, stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _run_checked(inputs: list[str | Path], out: Path, model: ModelSpec, options: PredictOptions,
                 stage: Path) -> RunResult:
    items, converted = dicom.convert_inputs(inputs, stage)
    scans = collect_inputs(items)
    unknown = sorted(set(options.rating_slices or {}) - {s.name for s in scans} - {"*"})
    if unknown:
        raise MfnsInputError(f"--rating-slices: no scan named {unknown[0]!r}")
    paths = {s.name: output_paths(s) for s in scans}
    inputs_real = {s.path.resolve() for s in scans}
    planned = [p for op in paths.values() for p in op.all_paths(options.report)]
    hit = next((p for p in planned if (out / p).resolve() in inputs_real), None)
    if hit is not None:  # never, not even with --overwrite, replace an input
        raise MfnsInputError(f"{out / hit}: this output would replace an input scan; choose another -o")
    settings = _settings(model, options)
    digest = scan_state.settings_digest(settings)
    resuming = scan_state.state_dir(out).is_dir()
    todo, result = [], RunResult()
    for order, s in select_part(scans, options.num_parts, options.part_id):
        marker = scan_state.read_marker(out, s.name)
        if marker is not None and not options.overwrite:
            if marker.get("settings_digest") != digest or marker.get("input_sha256") != scan_state.file_sha256(s.path):
                raise MfnsInputError(f"{out / paths[s.name].mask}: done earlier with another input or other settings "
                                     f"(use --overwrite to redo it)")
            result.skipped.append(s.name)
            continue
        if marker is None and not options.overwrite and not resuming:
            clash = next((p for p in paths[s.name].all_paths(options.report) if (out / p).exists()), None)
            if clash is not None:
                raise MfnsInputError(f"{out / clash}: output exists (use --overwrite to replace)")
        todo.append((order, s))
    if not options.overwrite and not resuming and options.num_parts == 1 and options.report:
        clash = next((b for b in BATCH_FILES if (out / b).exists()), None)
        if clash is not None:
            raise MfnsInputError(f"{out / clash}: output exists (use --overwrite to replace)")
    if result.skipped:
        logger.info("%d scan(s) already done in %s: skipped", len(result.skipped), out)
    out.mkdir(parents=True, exist_ok=True)
    if converted:  # the converted NIfTI (+ JSON sidecar) is kept next to the outputs
        kept = dicom.keep_converted(converted, out / "converted")
        for s in scans:
            s.path = kept.get(s.path, s.path)
    if todo:
        _run(todo, paths, out, model, options, settings, digest, result)
    if any(s.bids for s in scans) and not (out / "dataset_description.json").exists():
        from nnunetv2_mfns import __version__ as version
        write_json_atomic(bids_dataset_description(version), out / "dataset_description.json")
    any_report = any(m.get("report") for m in scan_state.all_markers(out))  # none when every scan failed
    if options.report and options.num_parts == 1 and any_report and \
            (todo or not all((out / b).exists() for b in BATCH_FILES)):
        from .cohort_merge import merge_cohort
        merge_cohort(out)
        result.merged = True
    return result


def _run(todo: list[tuple[int, ScanInput]], paths: dict[str, OutputPaths], out: Path, model: ModelSpec,
         options: PredictOptions, settings: dict, digest: str, result: RunResult) -> None:
    from .predictor import ScanPredictor
    predictor = ScanPredictor(model, options.device, options.tta, options.step_size, progress=False)
    work_root = scan_state.state_dir(out) / scan_state.WORK_DIR
    work_root.mkdir(parents=True, exist_ok=True)
    for order, s in tqdm(todo, desc="scans", unit="scan", disable=not options.progress):
        work = Path(tempfile.mkdtemp(prefix="scan-", dir=work_root))
        try:
            summary = _one_scan(order, s, paths[s.name], out, work, predictor, model, options, settings, digest)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # one scan never sinks the cohort: record it, go on with the others
            reason = str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__
            logger.error("%s: failed (%s)", s.path, reason)
            result.failed[s.name] = reason
            p = scan_state.failed_path(out, s.name)
            p.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic({"name": s.name, "input": str(s.path), "reason": reason}, p)
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        scan_state.failed_path(out, s.name).unlink(missing_ok=True)
        result.done.append(summary)
        if summary.get("attention"):
            result.attention[s.name] = summary["attention"]


def _one_scan(order: int, s: ScanInput, op: OutputPaths, out: Path, work: Path, predictor, model: ModelSpec,
              options: PredictOptions, settings: dict, digest: str) -> dict:
    from nnunetv2_mfns import __version__ as version
    from nnunetv2_mfns.evaluation.registration import read_t2w

    t0 = time.perf_counter()
    seconds = {}
    input_sha = scan_state.file_sha256(s.path)
    img = read_t2w(s.path)
    rating, attention = None, None
    if options.report:
        from nnunetv2_mfns.evaluation import rating_slices
        try:
            res = rating_slices.locate_rating_slices(img, manual_slices=_manual_for(options, s.name),
                                                     deformable=options.deformable, seed=0, source=str(s.path))
            rating = res
        except MfnsInputError as e:
            attention = str(e).split(": ", 1)[1] if str(e).startswith(str(s.path)) else str(e)
            logger.warning("%s: rating slices not found (%s); mask and census still made", s.path, attention)

    seconds["read_and_registration"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    staged = stage_inputs([s], work / "staged")[0]
    trunc = work / "pred" / "scan"
    predictor.predict(staged, trunc, save_probabilities=options.threshold is not None)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(trunc) + ".nii.gz"))
    prob = None
    if options.threshold is not None:
        with np.load(str(trunc) + ".npz") as z:
            prob = z["probabilities"][1]
    mask, removed = postprocess.apply(seg, prob, options.threshold, options.min_size, img.GetSpacing())
    write_image_atomic(mask, img, out / op.mask)
    seconds["prediction"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    outputs = [str(op.mask)]
    summary = {"name": s.name, "input": str(s.path), "mask": str(op.mask)}
    doc = {"name": s.name, "order": order, "input": str(s.path), "input_sha256": input_sha,
           "settings_digest": digest, "settings": settings, "attention": attention}
    if options.report:
        from .scan_report import report_one
        model_line = (f"{model.dataset}/{model.folder.name}, folds {', '.join(map(str, model.folds))}, "
                      f"{model.checkpoint}")
        post = (f"threshold {options.threshold if options.threshold is not None else 'none (nnU-Net argmax)'}, "
                f"minimum size {options.min_size or 'none'}" + (f" ({removed} components removed)" if removed else ""))
        found = "not run"
        if rating is not None:
            found = ", ".join(f"{k} {v}" for k, v in rating.slice_source.items())
        meta = {"input": str(s.path), "model": model_line, "mfns version": version, "mask post-processing": post,
                "rating slices": found if attention is None else f"not found ({attention})"}
        doc.update(report_one(s.name, img, mask, rating, op, out, work, meta))
        outputs += [str(op.components), *map(str, op.regions.values() if rating is not None else []),
                    str(op.report_dir)]
        summary["report"] = str(op.report_dir / "report.html")
    seconds["census_and_report"] = time.perf_counter() - t0
    doc["outputs"] = outputs
    doc["seconds"] = {k: round(v, 2) for k, v in seconds.items()}  # where the time goes (throughput figure)
    summary["attention"] = attention
    scan_state.write_marker(out, s.name, doc)  # last: the scan counts as done from here on
    return summary
