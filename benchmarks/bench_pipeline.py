"""Pipeline-level cost of MfNS_De 2d against stock nnU-Net 2d / 3d_fullres and the plain U-Net baseline.

What a user waits for, measured through nnU-Net itself on one phantom dataset, one machine, in one run:
the dataset is generated (``generate_cohort``) and planned/preprocessed by the stock
``nnUNetv2_plan_and_preprocess``; every trainer is nnU-Net's own class (constructed with the plans, then
``initialize()``, ``get_dataloaders()`` and ``train_step()``), and inference uses the stock
``nnUNetPredictor`` (``manual_initialization`` with the trainer's network, ``predict_single_npy_array`` on a
raw volume: preprocessing, sliding window, resampling back). Methods:

| key | trainer | configuration |
|---|---|---|
| MfNS_De_2d | nnUNetTrainerMfNSDe (paper recipe) | 2d |
| nnUNet_2d | nnUNetTrainer (stock) | 2d |
| nnUNet_3d_fullres | nnUNetTrainer (stock) | 3d_fullres |
| UNet2D | nnUNetTrainerUNet2D_PaperRecipe | 2d |

Figures per method: training seconds per iteration with data loading excluded (``train_step`` on a batch
fetched beforehand) and included (``next(dataloader)`` + ``train_step``, as nnU-Net's epoch loop does),
at the trainer's own batch and patch size, and per nnU-Net epoch (x 250); MfNS_De and stock 2d also at
equal batch size (both batches cut to the smaller of the two planned sizes; same 2d patch); inference
seconds per volume with and without mirroring (nnU-Net's default tile step 0.5, Gaussian weighting);
peak memory of a training step (CPU: growth of the process's peak resident set above the resident set
before the step, the peak reset through /proc/self/clear_refs and glibc told to return large blocks to
the OS so earlier steps do not hide later ones; GPU: ``torch.cuda.max_memory_allocated`` growth);
parameters (counted on the trainer's network) and forward MACs per patch at batch 1 (FlopCounterMode
FLOPs / 2 on a meta-device copy, deep supervision off). All timed loops go round-robin over the methods
so that load changes on a shared machine hit all of them alike. Weights are untrained (timing only).

Modes: ``--tiny`` (test: 3 demo-profile subjects, 1 repetition), ``--quick`` (2-core CPUs: 4 demo-profile
subjects, 5 training / 2 inference repetitions), ``--full`` (GPU: 4 realistic-profile subjects, 10 / 3).
``--quick`` uses the CPU-sized demo profile (28 x 80 x 80 voxels) because realistic volumes (75 x 480 x 400)
take minutes per prediction on a 2-core CPU; the realistic-volume figures are ``--full``'s.
``--profile``, ``--n-subjects``, ``--reps``, ``--infer-reps`` override a mode's defaults. The work folder is reused (resumable): an
existing generated and preprocessed dataset is not rebuilt.

Usage:
    python benchmarks/bench_pipeline.py --quick --workdir /tmp/bench_pipeline --out docs/results/pipeline_benchmark
"""
import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_measure import (ITERATIONS_PER_EPOCH, METHODS, _limit_malloc_caching, build_trainers,  # noqa: E402
                              measure, prepare_dataset, set_nnunet_env, summarise)

logger = logging.getLogger("bench_pipeline")

SCHEMA = "nnunetv2_mfns.bench_pipeline/1"
MODES = {  # mode -> (profile, n_subjects, training reps, inference reps, device)
    "tiny": ("demo", 3, 1, 1, "cpu"),
    "quick": ("demo", 4, 5, 2, "cpu"),
    "full": ("realistic", 4, 10, 3, "cuda"),
}


# ---------------------------------------------------------------- report

def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "nnunetv2", "dynamic_network_architectures", "batchgeneratorsv2", "numpy", "nnunetv2-mfns"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    res = subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=REPO)
    return res.stdout.rstrip() if res.returncode == 0 else "unknown"  # keep porcelain's leading space


def _git_state() -> dict:
    """The commit and the measured package's files that differ from it (the benchmark measures the working
    tree, which other people edit concurrently)."""
    status = _git("status", "--porcelain", "--", "nnunetv2_mfns", "dataset_conversion", "benchmarks")
    dirty = [] if status == "unknown" else [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": _git("rev-parse", "--short", "HEAD"), "dirty": bool(dirty), "dirty_files": dirty}


def _device_info(device) -> dict:
    import torch

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"type": device.type, "cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def render_markdown(out: dict) -> str:
    f = lambda v, d=2: f"{v:.{d}f}"  # noqa: E731
    mm = lambda r, key, d=2: f"{r[key]:.{d}f} ({r[key + '_min']:.{d}f})"  # noqa: E731  median (fastest)
    dev = out["device"]
    where = dev.get("gpu", dev["cpu"]) + f" ({dev['type']}, {dev['logical_cpus']} logical CPUs, torch threads " \
        f"{dev['torch_threads']})"
    lines = [f"# Pipeline benchmark: MfNS_De 2d against stock nnU-Net ({out['mode']} mode)", "",
             "| figure (headline, issue 14) | value | goal | met |", "|---|---|---|---|"]
    lines += [f"| {h['figure']} | {f(h['value'])} | {h['goal']} | {'yes' if h['met'] else 'no'} |"
              for h in out["headline"]]
    q = out["runtime_s"] / 60
    lines += [f"| `--quick` on 2 CPU cores | this run ({out['mode']}): {q:.1f} min | < 15 min | "
              f"{('yes' if q < 15 else 'no') if out['mode'] == 'quick' else 'n/a (not --quick)'} |", "",
              f"- command: `{out['command']}`", f"- device: {where}",
              f"- load average (1, 5, 15 min) at start / end: {' '.join(f(x) for x in out['load']['start'])} / "
              f"{' '.join(f(x) for x in out['load']['end'])}" + ("" if dev["type"] == "cuda" else
              " (a shared machine: the ratios were measured side by side, absolute times depend on the load)"),
              "- versions: " + ", ".join(f"{k} {v}" for k, v in out["versions"].items()) +
              f"; git commit {out['git']['commit']}" + (" with uncommitted changes in " +
                                                        ", ".join(out["git"]["dirty_files"]) if out["git"]["dirty"]
                                                        else ""),
              "- environment: " + ", ".join(f"{k}={v}" for k, v in out["env"].items()),
              f"- dataset: phantom profile `{out['dataset']['profile']}`, {out['dataset']['n_subjects']} subjects, "
              f"seed {out['dataset']['seed']}; inference volume {out['dataset']['inference_volume']['file']} "
              f"{'x'.join(map(str, out['dataset']['inference_volume']['shape_zyx']))} voxels (z, y, x) at "
              f"{' x '.join(f(s) for s in out['dataset']['inference_volume']['spacing_zyx'])} mm; generation "
              f"{f(out['dataset']['generate_s'], 0)} s + planning/preprocessing "
              f"{f(out['dataset']['plan_preprocess_s'], 0)} s" + (" in an earlier run (work folder reused: not in "
                                                                  "this run's runtime)" if
                                                                  out['dataset']['reused_from_earlier_run'] else ""),
              f"- repetitions: {out['settings']['reps']} training iterations per figure and method, "
              f"{out['settings']['infer_reps']} predictions per volume figure, after one untimed warm-up each; "
              f"figures are median (fastest) of the repetitions, ratios use the fastest (a slow repetition on a "
              f"shared machine measures the other jobs); methods interleaved; runtime {q:.1f} min", "",
              "| method | trainer | config | batch | patch | params (M) | GMACs / patch | s / iter, loading excl. | "
              "s / iter, loading incl. | s / epoch (250 it, median), incl. | peak train memory MiB | s / volume, mirroring | "
              "s / volume, no mirroring |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in METHODS:
        r = out["methods"][k]
        lines.append(f"| {k} | {r['trainer']} | {r['configuration']} | {r['batch_size']} | "
                     f"{'x'.join(map(str, r['patch_size']))} | {f(r['params'] / 1e6)} | {f(r['gmacs_per_patch'], 1)} | "
                     f"{mm(r, 'train_s_per_iter_loading_excluded', 3)} | {mm(r, 'train_s_per_iter_loading_included', 3)} | "
                     f"{f(r['train_s_per_epoch_loading_included'], 0)} | {f(r['peak_train_memory_mib'], 0)} | "
                     f"{mm(r, 'infer_s_per_volume_mirroring')} | {mm(r, 'infer_s_per_volume_no_mirroring')} |")
    lines += ["", "Equal batch size (both cut to the smaller planned batch, same 2d patch, loading excluded):", "",
              "| method | batch | s / iter | peak train memory MiB |", "|---|---|---|---|"]
    for k in ("MfNS_De_2d", "nnUNet_2d"):
        e = out["methods"][k]["equal_batch"]
        lines.append(f"| {k} | {e['batch_size']} | {mm(e, 'train_s_per_iter_loading_excluded', 3)} | "
                     f"{f(e['peak_train_memory_mib'], 0)} |")
    lines += ["", "Other ratios: " + "; ".join(f"{k} {f(v)}" for k, v in out["other_ratios"].items()) + ".", "",
              "Memory: " + out["memory_method"], "", "Every figure, with all repetitions, is in the JSON file "
              "next to this one. Weights are untrained (timing only)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- entry point

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--tiny", action="store_const", const="tiny", dest="mode", help="test mode (minutes on a CPU)")
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help="2-core CPU mode")
    mode.add_argument("--full", action="store_const", const="full", dest="mode", help="GPU mode, realistic volumes")
    parser.add_argument("--workdir", required=True, help="work folder (nnU-Net raw/preprocessed/results); reused")
    parser.add_argument("--out", required=True, help="output stem: writes <out>.md and <out>.json")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--profile", choices=("demo", "realistic"), help="phantom profile (mode default)")
    parser.add_argument("--n-subjects", type=int, help="phantom subjects, >= 2 (mode default)")
    parser.add_argument("--reps", type=int, help="timed training repetitions (mode default)")
    parser.add_argument("--infer-reps", type=int, help="timed predictions per volume figure (mode default)")
    parser.add_argument("--seed", type=int, default=0, help="phantom and torch seed (default 0)")
    parser.add_argument("--threads", type=int, help="torch threads (default: 1 on CPU, torch's default on GPU)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device (mode default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    profile, n_subjects, reps, infer_reps, device_name = MODES[args.mode]
    profile, n_subjects = args.profile or profile, args.n_subjects or n_subjects
    reps, infer_reps, device_name = args.reps or reps, args.infer_reps or infer_reps, args.device or device_name
    if n_subjects < 2 or reps < 1 or infer_reps < 1:
        print("error: --n-subjects must be >= 2, --reps and --infer-reps >= 1", file=sys.stderr)
        return 2
    md, js = Path(args.out + ".md"), Path(args.out + ".json")
    if not args.overwrite and (md.exists() or js.exists()):
        print(f"error: {md} or {js} exists (use --overwrite)", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).resolve()
    t_start, load_start, git_state = time.perf_counter(), os.getloadavg(), _git_state()
    if device_name == "cpu":  # the project's CPU defaults (interfaces.md), unless the user set them
        for k, v in (("OMP_WAIT_POLICY", "PASSIVE"), ("nnUNet_compile", "false"), ("nnUNet_n_proc_DA", "1"),
                     ("nnUNet_def_n_proc", "1")):
            os.environ.setdefault(k, v)
    set_nnunet_env(workdir)
    _limit_malloc_caching()
    import torch

    if device_name == "cuda" and not torch.cuda.is_available():
        print("error: --full / --device cuda needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    if args.threads or device_name == "cpu":
        torch.set_num_threads(args.threads or 1)
    device = torch.device(device_name)
    ds = prepare_dataset(workdir, profile, n_subjects, args.seed)
    trainers = build_trainers(device)
    raw_image = Path(ds["raw"]) / "imagesTr" / f"{ds['cases'][-1]}_0000.nii.gz"  # the validation case
    try:
        res = measure(trainers, device, reps, infer_reps, raw_image)
    finally:
        for tr in trainers.values():  # stop nnU-Net's augmentation workers, also after an error
            for dl in (tr.dataloader_train, tr.dataloader_val):
                if hasattr(dl, "_finish"):
                    dl._finish()
    volume = res.pop("_inference_volume")
    summary = summarise(res)
    command = "python benchmarks/bench_pipeline.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {
        "schema": SCHEMA, "mode": args.mode, "command": command, "date_utc": datetime.now(timezone.utc).isoformat(),
        "versions": _versions(), "git": git_state,
        "device": _device_info(device),
        "env": {k: os.environ.get(k, "") for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "nnUNet_n_proc_DA",
                                                   "nnUNet_def_n_proc", "nnUNet_compile")},
        "load": {"start": list(load_start), "end": list(os.getloadavg())},
        "dataset": {"profile": profile, "n_subjects": n_subjects, "seed": args.seed, "cases": ds["cases"],
                    "inference_volume": volume, "reused_from_earlier_run": ds["reused"], "generate_s": ds["generate_s"],
                    "plan_preprocess_s": ds["plan_preprocess_s"], "plan_command": ds["plan_command"]},
        "settings": {"reps": reps, "infer_reps": infer_reps, "iterations_per_epoch": ITERATIONS_PER_EPOCH,
                     "tile_step_size": 0.5},
        "memory_method": ("CUDA: growth of torch.cuda.max_memory_allocated over one training step" if device.type ==
                          "cuda" else "CPU: growth of the process's peak resident set (VmHWM, reset via "
                          "/proc/self/clear_refs) over the resident set before one training step (loading "
                          "excluded); glibc mmap threshold 64 KiB so freed blocks leave the resident set"),
        "methods": res, **summary, "runtime_s": time.perf_counter() - t_start,
    }
    md.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps(out, indent=1))
    md.write_text(render_markdown(out))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
