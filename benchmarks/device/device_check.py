"""The device check of issue 24: what a GPU run of this project costs, measured in one short, prepared run.

Run by benchmarks/device/check.sh (which first installs the offline kit); docs/gpu.md says how and why.
On the realistic 0.5 mm phantom profile (generated here, seeded), planned and preprocessed by nnU-Net, it
measures for MfNS_De 2d (nnUNetTrainerMfNSDe), stock nnU-Net 2d and stock 3d_fullres, each with
nnUNet_compile off and on: seconds per training iteration through the trainer's own ``train_step`` (nnU-Net
runs it under CUDA autocast: AMP), the first iteration separately (it holds the compilation), GPU peak
memory of training, and inference seconds per volume through the stock ``nnUNetPredictor`` (mirroring on,
nnU-Net's default). Every (method, compile) pair runs in its own process with a time limit taken from the
check's budget, compile-off pairs first, so a slow compilation costs only its own figures and the check
ends within ``--budget-s``. One JSON (schema ``nnunetv2_mfns.device_check/1``) and one log go to ``--out``;
the JSON is rewritten after every pair, so a killed run still returns what it measured.

``--cpu`` runs the same path on the CPU (``--quick``: the small demo phantom and few iterations): GPU
fields are null with the reason in ``null_reasons``, and compile-on pairs are skipped because nnU-Net's
trainer never compiles on a CPU (``nnUNetTrainer._do_i_compile``).
"""
import argparse
import importlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))
from bench_pipeline import _device_info, _git_state, _versions  # noqa: E402
from pipeline_measure import METHODS as PIPELINE_METHODS  # noqa: E402
from pipeline_measure import _limit_malloc_caching, _status_kib, _sync, _timed, set_nnunet_env  # noqa: E402

logger = logging.getLogger("device_check")
SCHEMA = "nnunetv2_mfns.device_check/1"
DATASET_ID, DATASET_NAME = 988, "DeviceCheck"
METHOD_KEYS = ("MfNS_De_2d", "nnUNet_2d", "nnUNet_3d_fullres")
# mode -> phantom profile, subjects, warm-up iterations (the first one timed alone), timed iterations with a
# fixed batch, timed iterations through the data loader, timed predictions after one warm-up
MODES = {
    "gpu": dict(profile="realistic", n_subjects=3, warmup=3, reps=10, loader_reps=3, infer_reps=1),
    "gpu-quick": dict(profile="realistic", n_subjects=2, warmup=2, reps=3, loader_reps=1, infer_reps=1),
    "cpu-quick": dict(profile="demo", n_subjects=3, warmup=1, reps=2, loader_reps=1, infer_reps=1),
    "cpu": dict(profile="demo", n_subjects=4, warmup=2, reps=5, loader_reps=2, infer_reps=2),
}
GPU_FIELDS = ("gpu_peak_memory_allocated_mib", "gpu_peak_memory_reserved_mib")
RESERVE_S = 15  # kept back from the budget for writing the report


# ---------------------------------------------------------------- one (method, compile) pair, in its own process

def run_pair(args) -> dict:
    """Trainer set up as nnUNetv2_train does (initialize, data loaders), timed train_step, peak memory,
    then the stock predictor on one raw volume."""
    os.environ["nnUNet_compile"] = "true" if args.compile else "false"
    set_nnunet_env(Path(args.workdir))
    _limit_malloc_caching()
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_preprocessed

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if device.type == "cuda":  # as nnunetv2.run.run_training does
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    else:
        torch.set_num_threads(args.threads)
    module, cls, cfg = PIPELINE_METHODS[args.method]
    pre = Path(nnUNet_preprocessed) / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    plans, dataset_json = load_json(str(pre / "nnUNetPlans.json")), load_json(str(pre / "dataset.json"))
    tr = getattr(importlib.import_module(module), cls)(dict(plans, continue_training=False), cfg, 0, dataset_json,
                                                       device)
    tr.initialize()
    tr.dataloader_train, tr.dataloader_val = tr.get_dataloaders()
    tr.dataset_class.unpack_dataset(tr.preprocessed_dataset_folder, overwrite_existing=False, num_processes=1,
                                    verify=True)
    tr.network.train()
    compiled = type(tr.network).__name__ == "OptimizedModule"
    res = {"trainer": cls, "configuration": cfg, "batch_size": int(tr.batch_size),
           "patch_size": [int(p) for p in tr.configuration_manager.patch_size],
           "params": int(sum(p.numel() for p in tr.network.parameters())), "compiled": compiled,
           "amp": device.type == "cuda"}
    try:
        batch = next(tr.dataloader_train)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rss_before = _status_kib("VmRSS") / 1024
        res["first_iter_s"] = _timed(lambda: tr.train_step(batch), device)  # compilation happens here
        for _ in range(args.warmup - 1):
            tr.train_step(batch)
        times = [_timed(lambda: tr.train_step(batch), device) for _ in range(args.reps)]
        loader = [_timed(lambda: tr.train_step(next(tr.dataloader_train)), device) for _ in range(args.loader_reps)]
        res.update(train_s_per_iter=statistics.median(times), train_s_per_iter_min=min(times), train_s_all=times,
                   train_s_per_iter_loading_included=statistics.median(loader), train_s_loading_included_all=loader)
        if device.type == "cuda":
            _sync(device)
            res["gpu_peak_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
            res["gpu_peak_memory_reserved_mib"] = torch.cuda.max_memory_reserved() / 2 ** 20
        else:
            res["cpu_peak_rss_growth_mib"] = _status_kib("VmHWM") / 1024 - rss_before
        logger.info("%s compile=%s: %.3f s/iter (first %.1f s)", args.method, compiled, res["train_s_per_iter"],
                    res["first_iter_s"])

        raw = Path(args.workdir) / "raw" / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}" / "imagesTr"
        image = sorted(raw.glob("*_0000.nii.gz"))[-1]  # the validation case of fold 0
        img, props = SimpleITKIO().read_images([str(image)])
        tr.set_deep_supervision_enabled(False)
        tr.network.eval()
        pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                               perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                               verbose_preprocessing=False, allow_tqdm=False)
        # the predictor loads each parameter set into the uncompiled module (`_orig_mod` of a compiled one), as a
        # checkpoint's weights would be
        plain = getattr(tr.network, "_orig_mod", tr.network)
        params = [{n: t.detach().clone() for n, t in plain.state_dict().items()}]
        pred.manual_initialization(tr.network, tr.plans_manager, tr.configuration_manager, params, tr.dataset_json,
                                   cls, tr.inference_allowed_mirroring_axes)
        with torch.no_grad():
            res["infer_first_s"] = _timed(lambda: pred.predict_single_npy_array(img, props), device)
            infer = [_timed(lambda: pred.predict_single_npy_array(img, props), device) for _ in range(args.infer_reps)]
        res.update(infer_s_per_volume=statistics.median(infer), infer_s_all=infer, infer_mirroring=True,
                   mirror_axes=list(tr.inference_allowed_mirroring_axes or []), infer_volume=image.name,
                   infer_volume_shape_zyx=list(img.shape[1:]))
        logger.info("%s compile=%s: %.2f s/volume", args.method, compiled, res["infer_s_per_volume"])
    finally:
        for dl in (tr.dataloader_train, tr.dataloader_val):
            if hasattr(dl, "_finish"):
                dl._finish()
    return res


# ---------------------------------------------------------------- the check

def prepare_dataset(workdir: Path, profile: str, n_subjects: int, seed: int, n_proc: int) -> dict:
    """Phantom -> nnU-Net raw dataset -> stock planning and preprocessing (2d, 3d_fullres); fold 0 validates on
    the last case. Always rebuilt: the check measures a fresh node."""
    from nnunetv2_mfns.dataset_conversion.phantom import generate_cohort

    t0 = time.perf_counter()
    ds = generate_cohort(workdir / "raw", n_subjects=n_subjects, seed=seed, profile=profile, dataset_id=DATASET_ID,
                         dataset_name=DATASET_NAME, overwrite=True, n_jobs=min(n_subjects, n_proc), progress=False)
    t_gen = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints", "-d",
           str(DATASET_ID), "-c", "2d", "3d_fullres", "-np", str(n_proc), str(n_proc), "-npfp", str(n_proc)]
    with open(workdir / "plan_and_preprocess.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    cases = sorted(p.name[:-len(".nii.gz")] for p in (ds / "labelsTr").glob("*.nii.gz"))
    pre = workdir / "preprocessed" / ds.name
    (pre / "splits_final.json").write_text(json.dumps([{"train": cases[:-1], "val": cases[-1:]}]))
    return {"profile": profile, "n_subjects": n_subjects, "seed": seed, "cases": cases, "generate_s": t_gen,
            "plan_preprocess_s": time.perf_counter() - t0 - t_gen,
            "plan_command": "nnUNetv2_plan_and_preprocess " + " ".join(cmd[3:])}


def _null_gpu_fields(res: dict, reason: str, null_reasons: dict) -> None:
    for f in GPU_FIELDS:
        res.setdefault(f, None)
        null_reasons[f] = reason


def summarise(results: dict) -> dict:
    """Per method: s/iter and s/volume with compile off and on, the compile speed-up, peak GPU memory."""
    out = {}
    for key, r in results.items():
        off, on = r.get("compile_off", {}), r.get("compile_on", {})
        row = {"train_s_per_iter_compile_off": off.get("train_s_per_iter"),
               "train_s_per_iter_compile_on": on.get("train_s_per_iter"),
               "first_iter_s_compile_on": on.get("first_iter_s"),
               "infer_s_per_volume_compile_off": off.get("infer_s_per_volume"),
               "infer_s_per_volume_compile_on": on.get("infer_s_per_volume"),
               "gpu_peak_memory_allocated_mib_compile_off": off.get("gpu_peak_memory_allocated_mib"),
               "gpu_peak_memory_allocated_mib_compile_on": on.get("gpu_peak_memory_allocated_mib")}
        a, b = row["train_s_per_iter_compile_off"], row["train_s_per_iter_compile_on"]
        row["compile_speedup_train"] = a / b if a and b else None
        out[key] = row
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for device_check.json (and the log check.sh writes)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU (GPU fields null, compile-on skipped)")
    p.add_argument("--quick", action="store_true", help="fewer subjects and iterations")
    p.add_argument("--workdir", help="nnU-Net folders (default: a new temporary folder, outside OUT)")
    p.add_argument("--seed", type=int, default=0, help="phantom and torch seed (default 0)")
    p.add_argument("--budget-s", type=float, help="wall-clock budget of the whole check after the install "
                   "(default 420 on a GPU: with the install < 8 min; 3600 with --cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1)")
    p.add_argument("--install-s", type=float, help="seconds check.sh spent installing the kit (recorded)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", choices=METHOD_KEYS, help=argparse.SUPPRESS)
    p.add_argument("--compile", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    for k in ("warmup", "reps", "loader_reps", "infer_reps"):
        p.add_argument(f"--{k.replace('_', '-')}", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    if args.worker:
        res = run_pair(args)
        Path(args.out).write_text(json.dumps(res))
        return 0

    t_start = time.perf_counter()
    out_dir = Path(args.out).resolve()
    workdir = Path(args.workdir).resolve() if args.workdir else None
    if workdir is not None and (workdir == out_dir or out_dir in workdir.parents):
        print(f"error: --workdir {workdir} must lie outside --out {out_dir} (only the report comes back)",
              file=sys.stderr)
        return 2
    mode = ("cpu" if args.cpu else "gpu") + ("-quick" if args.quick else "")
    if args.budget_s is None:
        args.budget_s = 3600.0 if args.cpu else 420.0
    settings = MODES[mode]
    if args.cpu:  # the project's CPU defaults (docs/interfaces.md), unless the user set them
        for k, v in (("OMP_WAIT_POLICY", "PASSIVE"), ("nnUNet_n_proc_DA", "1"), ("nnUNet_def_n_proc", "1")):
            os.environ.setdefault(k, v)
    import torch

    device = torch.device("cpu" if args.cpu else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible to torch; run with --cpu for the CPU check", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="mfns_device_check_"))
    set_nnunet_env(workdir)
    n_proc = 1 if args.cpu else max(1, min(8, (os.cpu_count() or 2) - 1))
    report = {"schema": SCHEMA, "mode": mode, "command": "bash benchmarks/device/check.sh " + " ".join(
        a for a in ("--cpu" if args.cpu else "", "--quick" if args.quick else "") if a),
        "date_utc": datetime.now(timezone.utc).isoformat(), "seed": args.seed, "budget_s": args.budget_s,
        "settings": settings, "versions": _versions(), "git": _git_state(), "device": _device_info(device),
        "kit": _kit_manifest(), "install_s": args.install_s, "workdir": str(workdir), "null_reasons": {},
        "results": {}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report["device"].update(gpu_memory_total_mib=props.total_memory / 2 ** 20, cuda=torch.version.cuda)
    js = out_dir / "device_check.json"

    def write():
        report["summary"] = summarise(report["results"])
        report["runtime_s"] = time.perf_counter() - t_start
        js.write_text(json.dumps(report, indent=1))

    logger.info("mode %s on %s: generating the %s phantom (%d subjects, seed %d), planning", mode,
                report["device"].get("gpu", report["device"]["cpu"]), settings["profile"], settings["n_subjects"],
                args.seed)
    report["dataset"] = prepare_dataset(workdir, settings["profile"], settings["n_subjects"], args.seed, n_proc)
    write()
    for compile_on in (False, True):
        for key in METHOD_KEYS:
            slot = report["results"].setdefault(key, {})
            name = "compile_on" if compile_on else "compile_off"
            if compile_on and device.type == "cpu":
                slot[name] = {"status": "skipped", "reason": "nnU-Net's trainer never compiles on a CPU "
                              "(nnUNetTrainer._do_i_compile); the compile figures need a GPU"}
                continue
            left = args.budget_s - (time.perf_counter() - t_start) - RESERVE_S
            if left < 30:
                slot[name] = {"status": "skipped", "reason": f"check budget of {args.budget_s:.0f} s spent"}
                continue
            part = workdir / f"{key}_{name}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--method", key, "--compile",
                   str(int(compile_on)), "--device", device.type, "--workdir", str(workdir), "--out", str(part),
                   "--seed", str(args.seed), "--threads", str(args.threads)]
            for k in ("warmup", "reps", "loader_reps", "infer_reps"):
                cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k) or settings[k])]
            t0 = time.perf_counter()
            logger.info("%s %s (at most %.0f s)", key, name, left)
            try:
                subprocess.run(cmd, check=True, timeout=left)
                slot[name] = dict(json.loads(part.read_text()), status="ok")
            except subprocess.TimeoutExpired:
                slot[name] = {"status": "timeout", "reason": f"stopped after {left:.0f} s to keep the check within "
                              f"its {args.budget_s:.0f} s budget"}
            except subprocess.CalledProcessError as e:
                slot[name] = {"status": "failed", "reason": f"exit code {e.returncode}; see the log"}
            slot[name]["wall_s"] = time.perf_counter() - t0
            write()
    if device.type == "cpu":  # the same schema as a GPU run: GPU fields present, null, with the reason
        for r in report["results"].values():
            for v in r.values():
                _null_gpu_fields(v, "no GPU: --cpu run", report["null_reasons"])
    write()
    # compile-on pairs may time out on the GPU (documented); everything else must have been measured
    failed = [f"{k} {n} ({v['status']})" for k, r in report["results"].items() for n, v in r.items()
              if v["status"] == "failed" or (n == "compile_off" and v["status"] != "ok")]
    logger.info("wrote %s in %.0f s; summary: %s", js, report["runtime_s"], json.dumps(report["summary"]))
    if failed:
        print(f"error: device check: not measured: {', '.join(failed)} (log above)", file=sys.stderr)
        return 1
    return 0


def _kit_manifest() -> Optional[dict]:
    path = os.environ.get("MFNS_DEVICE_KIT_MANIFEST")
    if not path or not Path(path).is_file():
        return None
    m = json.loads(Path(path).read_text())
    return {k: m.get(k) for k in ("python_version", "kit_bytes", "tracked_files_bytes", "untracked_files_bytes",
                                  "travel_total_bytes", "limit_bytes", "git_commit")} | {
        "wheels": [w["wheel"] for w in m.get("wheels", [])]}


if __name__ == "__main__":
    sys.exit(main())
