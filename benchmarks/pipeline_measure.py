"""Measuring half of benchmarks/bench_pipeline.py: the phantom dataset, nnU-Net's trainers and predictor, the
timed loops, peak memory, MACs and the headline ratios (the entry point and the report live there)."""
import ctypes
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

logger = logging.getLogger("bench_pipeline")

DATASET_ID, DATASET_NAME = 987, "BenchPipeline"
# key -> (trainer module, trainer class, configuration)
METHODS: Dict[str, tuple] = {
    "MfNS_De_2d": ("nnunetv2_mfns.trainers", "nnUNetTrainerMfNSDe", "2d"),
    "nnUNet_2d": ("nnunetv2.training.nnUNetTrainer.nnUNetTrainer", "nnUNetTrainer", "2d"),
    "nnUNet_3d_fullres": ("nnunetv2.training.nnUNetTrainer.nnUNetTrainer", "nnUNetTrainer", "3d_fullres"),
    "UNet2D": ("nnunetv2_mfns.trainers", "nnUNetTrainerUNet2D_PaperRecipe", "2d"),
}
ITERATIONS_PER_EPOCH = 250  # nnU-Net's default num_iterations_per_epoch
GOALS = [  # (key, figure, goal as text, threshold) from issue 14
    ("infer_mfns_vs_3d", "MfNS_De 2d inference per volume / stock 3d_fullres (mirroring on)", "<= 1.0", 1.0),
    ("infer_mfns_vs_2d", "MfNS_De 2d inference per volume / stock 2d (mirroring on)", "<= 1.5", 1.5),
    ("train_mfns_vs_2d_equal_batch", "MfNS_De training step / stock 2d, equal batch size (loading excluded)",
     "<= 2.0", 2.0),
    ("memory_mfns_vs_2d_equal_batch", "MfNS_De peak training memory / stock 2d, equal batch size", "<= 2.0", 2.0),
]


# ---------------------------------------------------------------- environment and dataset

def set_nnunet_env(workdir: Path) -> Dict[str, str]:
    """nnU-Net reads its folders at import time: set them before anything imports nnunetv2."""
    env = {"nnUNet_raw": str(workdir / "raw"), "nnUNet_preprocessed": str(workdir / "preprocessed"),
           "nnUNet_results": str(workdir / "results")}
    for k, v in env.items():
        os.environ[k] = v
        Path(v).mkdir(parents=True, exist_ok=True)
    return env


def prepare_dataset(workdir: Path, profile: str, n_subjects: int, seed: int) -> dict:
    """Generates the phantom and runs the stock planner once; an existing result is reused."""
    from nnunetv2_mfns.dataset_conversion.phantom import generate_cohort

    raw = workdir / "raw" / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    pre = workdir / "preprocessed" / raw.name
    stamp = workdir / "dataset_ready.json"
    wanted = {"profile": profile, "n_subjects": n_subjects, "seed": seed}
    t0 = time.perf_counter()
    if stamp.is_file() and json.loads(stamp.read_text()).get("args") == wanted and (pre / "nnUNetPlans.json").is_file():
        logger.info("reusing dataset in %s", workdir)
        return dict(json.loads(stamp.read_text()), reused=True)
    for p in (raw, pre):
        shutil.rmtree(p, ignore_errors=True)
    generate_cohort(workdir / "raw", n_subjects=n_subjects, seed=seed, profile=profile, dataset_id=DATASET_ID,
                    dataset_name=DATASET_NAME, overwrite=True, progress=False)
    t_gen = time.perf_counter() - t0
    cmd = [str(Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess")), "-d", str(DATASET_ID),
           "-c", "2d", "3d_fullres", "-np", "1", "1", "-npfp", "1"]
    with open(workdir / "plan_and_preprocess.log", "w") as log:
        subprocess.run(cmd, check=True, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
    # fold 0: the last case validates, the others train (nnU-Net's own 5-fold split needs >= 5 cases)
    cases = sorted(p.name[:-len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    (pre / "splits_final.json").write_text(json.dumps([{"train": cases[:-1], "val": cases[-1:]}]))
    info = {"args": wanted, "raw": str(raw), "cases": cases, "generate_s": t_gen,
            "plan_preprocess_s": time.perf_counter() - t0 - t_gen, "plan_command": " ".join(cmd[1:])}
    stamp.write_text(json.dumps(info))
    return dict(info, reused=False)


# ---------------------------------------------------------------- measuring helpers

def _limit_malloc_caching() -> None:
    """Blocks >= 64 KiB are mmapped and returned to the OS when freed, so one step's peak does not stay in
    the resident set and hide the next method's (glibc mallopt M_MMAP_THRESHOLD = -3)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)
    except (OSError, AttributeError):
        logger.warning("mallopt unavailable: CPU peak-memory growth may be underestimated")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak memory growth of a block of work: CUDA allocator on GPU, resident set on CPU (MiB)."""

    def __init__(self, device) -> None:
        self.device = device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (peak RSS) to the current RSS
            self.base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _status_kib("VmHWM") * 1024
        self.mib = (peak - self.base) / 2 ** 20


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _cut(batch: dict, n: int) -> dict:
    t = batch["target"]
    return {"data": batch["data"][:n], "target": [x[:n] for x in t] if isinstance(t, list) else t[:n]}


def count_macs_per_patch(trainer) -> float:
    """Forward MACs at batch 1 on the plan's patch, deep supervision off, counted on a meta-device twin
    of the trainer's network (no compute)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cm = trainer.configuration_manager
    with torch.device("meta"):
        net = trainer.build_network_architecture(trainer.plans_manager, cm, trainer.num_input_channels,
                                                 trainer.label_manager.num_segmentation_heads, False)
        x = torch.zeros((1, trainer.num_input_channels, *cm.patch_size))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x)
    return fc.get_total_flops() / 2


# ---------------------------------------------------------------- the run

def build_trainers(device) -> Dict[str, object]:
    """Each method's nnU-Net trainer, set up the way ``nnUNetTrainer.on_train_start`` does it (network,
    optimiser, loss, data loaders, dataset unpacking), without starting nnU-Net's epoch loop."""
    import importlib

    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed

    pre = Path(nnUNet_preprocessed) / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    plans, dataset_json = load_json(str(pre / "nnUNetPlans.json")), load_json(str(pre / "dataset.json"))
    trainers = {}
    for key, (module, cls, cfg) in METHODS.items():
        # nnunetv2.run.run_training adds this key and the trainer pops it: a fresh copy per trainer
        tr_plans = dict(plans, continue_training=False)
        tr = getattr(importlib.import_module(module), cls)(tr_plans, cfg, 0, dataset_json, device)
        tr.initialize()
        tr.dataloader_train, tr.dataloader_val = tr.get_dataloaders()
        tr.dataset_class.unpack_dataset(tr.preprocessed_dataset_folder, overwrite_existing=False, num_processes=1,
                                        verify=True)
        tr.set_deep_supervision_enabled(tr.enable_deep_supervision)
        tr.network.train()
        trainers[key] = tr
        logger.info("%s: %s %s batch %d patch %s", key, cls, cfg, tr.batch_size, tr.configuration_manager.patch_size)
    return trainers


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def measure(trainers: dict, device, reps: int, infer_reps: int, raw_image: Path) -> dict:
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    res = {}
    for key, tr in trainers.items():
        cm = tr.configuration_manager
        res[key] = {"trainer": type(tr).__name__, "configuration": tr.configuration_name,
                    "network_class": f"{type(tr.network).__module__}.{type(tr.network).__name__}",
                    "batch_size": int(tr.batch_size), "patch_size": [int(p) for p in cm.patch_size],
                    "params": int(sum(p.numel() for p in tr.network.parameters())),
                    "gmacs_per_patch": count_macs_per_patch(tr) / 1e9,
                    "train_s_loading_excluded": [], "train_s_loading_included": []}
    eq = min(trainers["MfNS_De_2d"].batch_size, trainers["nnUNet_2d"].batch_size)
    batches = {k: next(tr.dataloader_train) for k, tr in trainers.items()}
    for k in ("MfNS_De_2d", "nnUNet_2d"):
        res[k]["equal_batch"] = {"batch_size": int(eq), "train_s_loading_excluded": []}

    logger.info("training: warm-up")
    for k, tr in trainers.items():  # allocator, thread pools, cudnn autotuning: not timed
        tr.train_step(batches[k])
    for r in range(reps):
        for k, tr in trainers.items():
            res[k]["train_s_loading_excluded"].append(_timed(lambda: tr.train_step(batches[k]), device))
            res[k]["train_s_loading_included"].append(
                _timed(lambda: tr.train_step(next(tr.dataloader_train)), device))
            if "equal_batch" in res[k]:
                res[k]["equal_batch"]["train_s_loading_excluded"].append(
                    _timed(lambda: tr.train_step(_cut(batches[k], eq)), device))
        logger.info("training: repetition %d/%d", r + 1, reps)

    logger.info("memory")
    for k, tr in trainers.items():
        with PeakMemory(device) as pm:
            tr.train_step(batches[k])
        res[k]["peak_train_memory_mib"] = pm.mib
        if "equal_batch" in res[k]:
            with PeakMemory(device) as pm:
                tr.train_step(_cut(batches[k], eq))
            res[k]["equal_batch"]["peak_train_memory_mib"] = pm.mib

    img, props = SimpleITKIO().read_images([str(raw_image)])
    predictors = {}
    for k, tr in trainers.items():
        tr.set_deep_supervision_enabled(False)
        tr.network.eval()
        pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                               perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                               verbose_preprocessing=False, allow_tqdm=False)
        # the predictor loads each parameter set into the network before predicting (a checkpoint's role)
        params = [{n: t.detach().clone() for n, t in tr.network.state_dict().items()}]
        pred.manual_initialization(tr.network, tr.plans_manager, tr.configuration_manager, params, tr.dataset_json,
                                   type(tr).__name__, tr.inference_allowed_mirroring_axes)
        predictors[k] = pred
        res[k]["mirror_axes"] = list(tr.inference_allowed_mirroring_axes or [])
        res[k]["infer_s_per_volume"] = {"mirroring": [], "no_mirroring": []}
    logger.info("inference: warm-up")
    with torch.no_grad():
        for k, pred in predictors.items():
            pred.predict_single_npy_array(img, props)
        for r in range(infer_reps):
            for mirroring in (False, True):
                for k, pred in predictors.items():
                    pred.use_mirroring = mirroring
                    res[k]["infer_s_per_volume"]["mirroring" if mirroring else "no_mirroring"].append(
                        _timed(lambda: pred.predict_single_npy_array(img, props), device))
            logger.info("inference: repetition %d/%d", r + 1, infer_reps)
    res["_inference_volume"] = {"file": raw_image.name, "shape_zyx": list(img.shape[1:]),
                                "spacing_zyx": [float(s) for s in props["spacing"]]}
    return res


def summarise(res: dict) -> dict:
    """Medians and minima, per-epoch figures (from the medians) and the ratios.

    The ratios use each figure's fastest repetition (``_min``): on a shared machine a slow repetition
    measures the other jobs (single steps varied up to 6x under load 20-30), and the minimum is the
    estimator that such bursts cannot inflate; medians and every repetition stay in the JSON."""
    med = statistics.median
    for k in METHODS:
        r = res[k]
        for name, values in (("train_s_per_iter_loading_excluded", r["train_s_loading_excluded"]),
                             ("train_s_per_iter_loading_included", r["train_s_loading_included"]),
                             ("infer_s_per_volume_mirroring", r["infer_s_per_volume"]["mirroring"]),
                             ("infer_s_per_volume_no_mirroring", r["infer_s_per_volume"]["no_mirroring"])):
            r[name], r[name + "_min"] = med(values), min(values)
        r["train_s_per_epoch_loading_excluded"] = ITERATIONS_PER_EPOCH * r["train_s_per_iter_loading_excluded"]
        r["train_s_per_epoch_loading_included"] = ITERATIONS_PER_EPOCH * r["train_s_per_iter_loading_included"]
        if "equal_batch" in r:
            e = r["equal_batch"]
            e["train_s_per_iter_loading_excluded"] = med(e["train_s_loading_excluded"])
            e["train_s_per_iter_loading_excluded_min"] = min(e["train_s_loading_excluded"])
    m, s2, s3 = res["MfNS_De_2d"], res["nnUNet_2d"], res["nnUNet_3d_fullres"]
    values = {
        "infer_mfns_vs_3d": m["infer_s_per_volume_mirroring_min"] / s3["infer_s_per_volume_mirroring_min"],
        "infer_mfns_vs_2d": m["infer_s_per_volume_mirroring_min"] / s2["infer_s_per_volume_mirroring_min"],
        "train_mfns_vs_2d_equal_batch": m["equal_batch"]["train_s_per_iter_loading_excluded_min"]
        / s2["equal_batch"]["train_s_per_iter_loading_excluded_min"],
        "memory_mfns_vs_2d_equal_batch": m["equal_batch"]["peak_train_memory_mib"]
        / s2["equal_batch"]["peak_train_memory_mib"],
    }
    headline = [{"key": key, "figure": fig, "value": values[key], "goal": goal, "met": values[key] <= thr}
                for key, fig, goal, thr in GOALS]
    extra = {
        "infer_mfns_vs_3d_no_mirroring": m["infer_s_per_volume_no_mirroring_min"]
        / s3["infer_s_per_volume_no_mirroring_min"],
        "infer_mfns_vs_2d_no_mirroring": m["infer_s_per_volume_no_mirroring_min"]
        / s2["infer_s_per_volume_no_mirroring_min"],
        "train_mfns_vs_2d_own_batch_loading_included": m["train_s_per_iter_loading_included_min"]
        / s2["train_s_per_iter_loading_included_min"],
        "train_mfns_vs_unet2d_own_batch": m["train_s_per_iter_loading_excluded_min"]
        / res["UNet2D"]["train_s_per_iter_loading_excluded_min"],
        "params_mfns_vs_2d": m["params"] / s2["params"],
        "gmacs_per_patch_mfns_vs_2d": m["gmacs_per_patch"] / s2["gmacs_per_patch"],
    }
    return {"headline": headline, "other_ratios": extra}
