"""CPU stand-ins for what a GPU run does differently (issue 24): mixed precision, torch.compile, DDP.

No line of this project had run on a GPU, where nnU-Net trains under CUDA autocast (fp16 on most cards),
compiles the network by default (nnU-Net 2.8: `nnUNet_compile` unset means on) and splits the batch over
GPUs with `-num_gpus N`. Each test runs the same code on the CPU in the closest form the CPU allows:

- every registered trainer's network, forward + its own loss on HF deep-supervision targets + backward,
  under `torch.autocast("cpu", dtype=torch.bfloat16)`: the autocast dtype plumbing (casts, dtype mismatches)
  is the same as on CUDA; finite loss close to fp32 and finite gradients;
- the attention gates at fp16: every value computed inside a channel or spatial gate (sigmoid inputs, MLP
  outputs, descriptors) on realistic activations (a phantom slice through the trainer's network) and on
  adversarially scaled ones stays inside fp16's range, and each gate run in fp16 matches fp32;
- `torch.compile` (inductor, C++ on CPU) of the trainer's MfNS_De gives eager's outputs (deselect with
  `-k "not compile"` or MFNS_SKIP_COMPILE=1; skipped with the reason when no C++ compiler is found);
- a 2-process `gloo` DDP step of the MfNS_De trainer (its own loss with `ddp=True`, its own `train_step`)
  gives the gradients of one process on the concatenated batch.

Networks are always built through the trainers' `build_network_architecture`, so the tests cover whatever
the default network is. GPU-only figures (speed, memory, real fp16 kernels): benchmarks/device/, docs/gpu.md.
"""
import copy
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import nnunetv2_mfns.nnunet_ext.mfns_trainer_registry as registry
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2_mfns.architectures.attention import ChannelAttention, SpatialAttention
from nnunetv2_mfns.trainers import BASE_TRAINERS, nnUNetTrainerMfNSDe
from benchmark_modules import load_benchmark
from tiny_dataset import make_2d_plans

FP16_MAX = 65504.0
DATASET_JSON = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "PVS": 1}, "numTraining": 6,
                "file_ending": ".nii.gz"}
# the classes whose networks are tested; every registered trainer must reduce to one of them
TESTED_TRAINERS = list(BASE_TRAINERS) + [nnUNetTrainer]
# hooks that decide the network, the loss and the DS targets of a trainer
NETWORK_HOOKS = ("build_network_architecture", "_get_deep_supervision_scales", "_build_loss", "network_options",
                 "network_class_name", "use_attention", "max_nested_stages", "max_features", "hf_mode",
                 "get_training_transforms", "get_validation_transforms", "train_step")


def make_plans(features=(8, 16, 32, 32, 32), patch=(64, 64), batch_dice=True) -> dict:
    """A small nnU-Net 2d plan (default planner's structure) that every trainer can build from."""
    return make_2d_plans(features, patch, batch_size=4, batch_dice=batch_dice)


def set_nnunet_env(root: Path) -> None:
    for k in ("nnUNet_results", "nnUNet_preprocessed", "nnUNet_raw"):
        os.environ[k] = str(root / k)


@pytest.fixture(autouse=True)
def nnunet_env(tmp_path, monkeypatch):
    for k in ("nnUNet_results", "nnUNet_preprocessed", "nnUNet_raw"):
        monkeypatch.setenv(k, str(tmp_path / k))
    torch.set_num_threads(1)


def build_trainer(trainer_cls, plans: dict = None, seed: int = 0):
    """The trainer's own hooks as nnU-Net's initialize() runs them, minus data loading (CPU)."""
    tr = trainer_cls(copy.deepcopy(plans or make_plans()), "2d", 0, DATASET_JSON, torch.device("cpu"))
    tr._set_batch_size_and_oversample()
    torch.manual_seed(seed)
    tr.network = tr.build_network_architecture(tr.plans_manager, tr.configuration_manager, 1,
                                               tr.label_manager.num_segmentation_heads, tr.enable_deep_supervision)
    tr.optimizer, tr.lr_scheduler = tr.configure_optimizers()
    tr.loss = tr._build_loss()
    return tr


def synthetic_batch(tr, n: int, size, seed: int = 0, dtype=torch.float32) -> dict:
    """n images with short bright 1-2 pixel bars (PVS-like) and their targets through the trainer's own
    validation transforms (HF deep-supervision targets for our trainers, nnU-Net's for the stock one)."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((n, 1, *size), dtype=np.int16)
    for b in range(n):
        for _ in range(6):
            y, x = rng.integers(2, min(size) - 3, size=2)
            seg[b, 0, y:y + 3, x] = 1
    img = (rng.normal(0, 0.3, size=seg.shape) + 2.0 * seg).astype(np.float32)
    tf = tr.get_validation_transforms(tr._get_deep_supervision_scales(), foreground_labels=[1])
    per_case = [tf(image=torch.from_numpy(img[b]), segmentation=torch.from_numpy(seg[b]))["segmentation"]
                for b in range(n)]
    target = ([torch.stack([t[s] for t in per_case]) for s in range(len(per_case[0]))]
              if isinstance(per_case[0], list) else torch.stack(per_case))
    return {"data": torch.from_numpy(img).to(dtype), "target": target}


# ------------------------------------------------------------------ (a) bf16 autocast, every trainer

def test_every_registered_trainer_reduces_to_a_tested_network():
    """Budget variants (`_ci`, `_demo`, ...) only change the schedule: each registered class must inherit its
    network, loss and targets from a class that the autocast test builds, or this test names it."""
    untested = []
    for name in registry.__all__:
        cls = getattr(registry, name)
        if not (isinstance(cls, type) and issubclass(cls, nnUNetTrainer)):
            continue
        base = next(k for k in cls.__mro__ if k in TESTED_TRAINERS)
        between = cls.__mro__[:cls.__mro__.index(base)]
        overridden = [h for k in between for h in NETWORK_HOOKS if h in vars(k)]
        if overridden:
            untested.append((name, overridden))
    assert not untested, f"registered trainers with their own network/loss hooks, add them to the tests: {untested}"
    assert len(TESTED_TRAINERS) >= 10


@pytest.mark.parametrize("trainer_cls", TESTED_TRAINERS, ids=[c.__name__ for c in TESTED_TRAINERS])
def test_bf16_autocast_forward_backward_finite(trainer_cls):
    tr = build_trainer(trainer_cls)
    patch = tuple(tr.configuration_manager.patch_size)
    batch = synthetic_batch(tr, 2, patch)
    tr.network.train()
    with torch.no_grad():
        loss_fp32 = float(tr.loss(tr.network(batch["data"]), batch["target"]))
    seen_dtypes = set()
    hooks = [m.register_forward_hook(lambda m, i, o: seen_dtypes.add(o.dtype))
             for m in tr.network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # like nnU-Net's train_step under CUDA autocast
        out = tr.network(batch["data"])
        loss = tr.loss(out, batch["target"])
    for h in hooks:
        h.remove()
    assert torch.bfloat16 in seen_dtypes, "autocast did not reach the convolutions"
    assert torch.isfinite(loss), f"{trainer_cls.__name__}: bf16 loss {loss}"
    # bf16 keeps ~3 significant digits: the loss must stay close to fp32's (a wrong cast or a lost branch does not)
    assert abs(loss.item() - loss_fp32) < 0.05, (loss.item(), loss_fp32)
    loss.backward()
    grads = [(n, p.grad) for n, p in tr.network.named_parameters() if p.requires_grad]
    with_grad = [(n, g) for n, g in grads if g is not None]
    assert len(with_grad) >= 0.9 * len(grads), f"{len(grads) - len(with_grad)} parameters got no gradient"
    bad = [n for n, g in with_grad if not torch.isfinite(g).all()]
    assert not bad, f"{trainer_cls.__name__}: non-finite gradients in {bad[:5]}"
    assert sum(float(g.float().norm()) for _, g in with_grad) > 0


# ------------------------------------------------------------------ (b) fp16 range of the attention gates

GATE_TYPES = (ChannelAttention, SpatialAttention)
SIGMOIDS = {torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, torch.special.expit}


class GateRangeRecorder(TorchFunctionMode):
    """Largest |value| of every floating tensor computed inside a gate module's forward (inputs to the
    sigmoid separately), and whether any was non-finite. Intercepts torch functions, so it sees what the gate
    computes however it is written."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.inside = 0
        self.max_abs, self.max_sigmoid_in, self.nonfinite, self.n_sigmoid = 0.0, 0.0, False, 0
        self.gates = [m for m in net.modules() if isinstance(m, GATE_TYPES)]
        self.inputs = {}
        self.handles = []
        for m in self.gates:
            self.handles.append(m.register_forward_pre_hook(self._enter))
            self.handles.append(m.register_forward_hook(self._leave))

    def _enter(self, module, args):
        self.inside += 1
        self.inputs[id(module)] = args[0].detach().clone()

    def _leave(self, module, args, out):
        self.inside -= 1

    def _note(self, t, sigmoid_input=False):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
            m = float(t.detach().abs().max())
            self.nonfinite |= not np.isfinite(m)
            self.max_abs = max(self.max_abs, m)
            if sigmoid_input:
                self.max_sigmoid_in, self.n_sigmoid = max(self.max_sigmoid_in, m), self.n_sigmoid + 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.inside:
            if func in SIGMOIDS:
                self._note(args[0], sigmoid_input=True)
            for o in (out if isinstance(out, (tuple, list)) else (out,)):
                self._note(o)
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module")
def phantom_slices(tmp_path_factory) -> np.ndarray:
    """Two z-scored axial slices (BG and CSO rating slices) of a one-subject study-profile phantom: 0.9 mm
    T2w with PVS, confounders, noise and bias field, normalised as nnU-Net's ZScoreNormalization does."""
    import SimpleITK as sitk

    from nnunetv2_mfns.dataset_conversion.phantom import generate_cohort

    out = tmp_path_factory.mktemp("phantom")
    ds = generate_cohort(out, n_subjects=1, seed=0, profile="study", dataset_id=991, dataset_name="GateRange",
                         progress=False)
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "imagesTr" / "PVS_001_0000.nii.gz"))).astype(np.float32)
    img = (img - img.mean()) / img.std()
    import json
    slices = json.loads((ds / "subjects.json").read_text())["subjects"]["PVS_001"]["rating_slices"]
    return np.stack([img[slices["BG"]], img[slices["CSO"]]])[:, None]


def gate_inputs_and_ranges(net, x):
    rec = GateRangeRecorder(net)
    try:
        with torch.no_grad(), rec:
            net(x)
    finally:
        rec.remove()
    return rec


def _scaled_norms(net, factor: float):
    """A copy of the network whose InstanceNorm gains are `factor` x larger (trained networks grow them)."""
    net = copy.deepcopy(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) and m.weight is not None:
                m.weight.mul_(factor)
    return net


def test_attention_gates_stay_in_fp16_range(phantom_slices):
    """Everything the gates compute stays below fp16's 65504 on realistic and adversarial activations, and
    each gate run entirely in fp16 gives fp32's gate (what CUDA autocast at fp16 would do, but stricter: autocast
    keeps reductions in fp32)."""
    shape = phantom_slices.shape[2:]
    patch = tuple(int(s // 16 * 16) for s in shape)  # nnU-Net patches are divisible by the total stride
    tr = build_trainer(nnUNetTrainerMfNSDe, make_plans(features=(32, 64, 128, 256, 256), patch=patch))
    net = tr.network.eval()
    x = torch.from_numpy(phantom_slices[:, :, :patch[0], :patch[1]].copy())
    spike = torch.zeros_like(x[:1])
    spike[0, 0, patch[0] // 2, patch[1] // 2] = 1e4  # one bright voxel: InstanceNorm turns it into ~sqrt(N)
    cases = {"phantom slices": (net, x), "phantom x 1000, not normalised": (net, x * 1000),
             "single bright voxel": (net, spike), "phantom, norm gains x 8": (_scaled_norms(net, 8.0), x)}
    report = {}
    for name, (model, inp) in cases.items():
        rec = gate_inputs_and_ranges(model, inp)
        assert rec.gates and rec.n_sigmoid > 0, "no gate was seen"
        report[name] = (rec.max_sigmoid_in, rec.max_abs)
        assert not rec.nonfinite, f"{name}: a non-finite value inside a gate"
        assert rec.max_abs < FP16_MAX, f"{name}: a gate computes |x| = {rec.max_abs:.3g} > fp16 max"
        # fp16 forward of every gate matches fp32
        for gate in rec.gates:
            xin = rec.inputs[id(gate)]
            assert float(xin.abs().max()) < FP16_MAX, f"{name}: a gate input exceeds fp16"
            with torch.no_grad():
                ref = gate(xin)
                half = copy.deepcopy(gate).half()(xin.half()).float()
            assert torch.isfinite(half).all(), f"{name}: fp16 {type(gate).__name__} is not finite"
            err = float((half - ref).abs().max())
            assert err < 2e-2, f"{name}: fp16 {type(gate).__name__} differs from fp32 by {err:.3g}"
    print("max |sigmoid input|, max |value| inside gates:", {k: (f"{a:.3g}", f"{b:.3g}") for k, (a, b) in
                                                               report.items()})


# ------------------------------------------------------------------ (c) torch.compile on CPU

def _cxx_compiler():
    return shutil.which(os.environ.get("CXX", "")) or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


@pytest.mark.skipif(os.environ.get("MFNS_SKIP_COMPILE") == "1", reason="MFNS_SKIP_COMPILE=1")
def test_torch_compile_matches_eager():
    """nnU-Net compiles the network on GPUs by default; inductor's CPU backend (C++) runs the same graph
    capture and fusion, so a compiled MfNS_De must give eager's outputs at every deep-supervision scale."""
    if _cxx_compiler() is None:
        pytest.skip("no C++ compiler (g++, c++, clang++ or $CXX) for torch.compile's CPU backend (inductor)")
    torch._dynamo.reset()
    # three plan stages (three rows of the nested grid: every node type, the fusion and deep supervision)
    # keep inductor's C++ kernel count, and so the compile time on 2 cores, small
    tr = build_trainer(nnUNetTrainerMfNSDe, make_plans(features=(4, 8, 8), patch=(16, 16)))
    net = tr.network.eval()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = net(x)
        compiled = torch.compile(net)(x)
    assert isinstance(compiled, (list, tuple)) and len(compiled) == len(eager) >= 3
    for e, c in zip(eager, compiled):
        assert e.shape == c.shape
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ (d) DDP with HF deep supervision

DDP_GLOBAL_BATCH = 4
DDP_PLANS = dict(features=(8, 16, 16, 16), patch=(32, 32))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trainer_step_gradients(tr, batch: dict) -> dict:
    """Runs the trainer's own train_step on `batch` and returns the gradients the optimiser would apply
    (captured at optimizer.step, i.e. after DDP's all-reduce and nnU-Net's gradient clipping)."""
    captured = {}
    net = tr.network.module if hasattr(tr.network, "module") else tr.network
    step = tr.optimizer.step

    def capture(*args, **kwargs):
        for n, p in net.named_parameters():
            if p.grad is not None:
                captured[n] = p.grad.detach().clone()
        return step(*args, **kwargs)

    tr.optimizer.step = capture
    tr.network.train()
    out = tr.train_step(batch)
    captured["__loss__"] = torch.tensor(float(out["loss"]))
    return captured


def _ddp_worker(rank: int, world: int, port: int, root: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    set_nnunet_env(Path(root))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        tr = nnUNetTrainerMfNSDe(make_plans(**DDP_PLANS), "2d", 0, DATASET_JSON, torch.device("cpu"))
        assert tr.is_ddp
        # nnU-Net assumes CUDA under DDP; this proxy keeps the CPU path of train_step (no autocast, no scaler)
        tr.device, tr.grad_scaler = torch.device("cpu"), None
        tr._set_batch_size_and_oversample()  # the global batch split over the ranks
        assert tr.batch_size == DDP_GLOBAL_BATCH // world
        torch.manual_seed(0)
        net = tr.build_network_architecture(tr.plans_manager, tr.configuration_manager, 1, 2, True).double()
        # as nnUNetTrainer.initialize does under DDP (SyncBatchNorm: no-op for InstanceNorm)
        tr.network = DDP(torch.nn.SyncBatchNorm.convert_sync_batchnorm(net))
        tr.optimizer, tr.lr_scheduler = tr.configure_optimizers()
        tr.loss = tr._build_loss()
        full = synthetic_batch(tr, DDP_GLOBAL_BATCH, DDP_PLANS["patch"], dtype=torch.float64)
        part = slice(rank * tr.batch_size, (rank + 1) * tr.batch_size)
        local = {"data": full["data"][part], "target": [t[part] for t in full["target"]]}
        torch.save(trainer_step_gradients(tr, local), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_process_gloo_gradients_match_single_process(tmp_path):
    """nnU-Net under `-num_gpus 2`: each rank trains on half the global batch, the soft Dice with batch
    Dice all-gathers its sums across ranks (the trainer's loss is built with ddp=True), DDP averages the
    gradients. Both ranks must apply the gradients that one process computes on the whole batch.

    In float64: in float32 the max-descriptors of the gates (amax) and the max-pooling route their gradient
    to whichever element wins a near-tie, and a batch of 2 vs 4 rounds the convolutions differently, so
    single small gradients differ by tens of percent (0.5% of the whole gradient). In float64 the same step
    agrees to 1e-8; a wrong loss scale or per-rank Dice differs by far more."""
    import torch.multiprocessing as mp

    world = 2
    out_dir = tmp_path / "ddp"
    out_dir.mkdir()
    mp.spawn(_ddp_worker, args=(world, _free_port(), str(tmp_path), str(out_dir)), nprocs=world, join=True)

    tr = build_trainer(nnUNetTrainerMfNSDe, make_plans(**DDP_PLANS))
    assert not tr.is_ddp and tr.batch_size == DDP_GLOBAL_BATCH
    torch.manual_seed(0)  # the same initial weights as the ranks
    tr.network = tr.build_network_architecture(tr.plans_manager, tr.configuration_manager, 1, 2, True).double()
    tr.optimizer, tr.lr_scheduler = tr.configure_optimizers()
    single = trainer_step_gradients(tr, synthetic_batch(tr, DDP_GLOBAL_BATCH, DDP_PLANS["patch"], dtype=torch.float64))
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for n, g in single.items() if n != "__loss__")))
    assert 0 < norm < 12, f"gradient norm {norm:.3g}: nnU-Net's clipping at 12 would hide a scaling error"
    for rank in range(world):
        ddp = torch.load(out_dir / f"rank{rank}.pt")
        assert set(ddp) == set(single)
        for name, g in single.items():
            if name != "__loss__":
                torch.testing.assert_close(ddp[name], g, rtol=1e-5, atol=1e-8,
                                           msg=lambda m: f"rank {rank}, gradient of {name}: {m}")
        # every rank reports the global batch's loss (batch Dice over all ranks' sums)
        torch.testing.assert_close(ddp["__loss__"], single["__loss__"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ the device kit's command lines (fast)

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, **env):
    import subprocess
    import sys

    full_env = dict(os.environ, PYTHON=sys.executable, **env)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=REPO, timeout=300)


def test_device_kit_scripts_refuse_bad_input_with_one_line(tmp_path):
    """check.sh / prepare.sh / device_check.py / long_budget_gpu.sh: a bad argument or a missing GPU is one
    `error:` line, exit 2, and nothing is measured or created. The end-to-end CPU run is
    `bash benchmarks/device/check.sh --cpu --quick` (minutes; docs/gpu.md, docs/results/gpu/)."""
    import sys

    for cmd in (["bash", "benchmarks/device/check.sh", "--bogus"],
                ["bash", "benchmarks/device/prepare.sh", "--python-version", "twelve"],
                ["bash", "benchmarks/device/long_budget_gpu.sh", "--jobs", "nnUNet_3d:7",
                 "--study", str(tmp_path / "s")],
                ["bash", "benchmarks/device/long_budget_gpu.sh", "--device", "tpu", "--study", str(tmp_path / "s")],
                ["bash", "benchmarks/device/long_budget_gpu.sh", "--jobs"],
                [sys.executable, "benchmarks/device/device_check.py", "--out", str(tmp_path / "o"), "--cpu",
                 "--workdir", str(tmp_path / "o" / "work")]):
        res = _run(cmd)
        assert res.returncode == 2, (cmd, res.returncode, res.stderr)
        assert res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "s").exists()  # long_budget_gpu.sh refused before creating its study folder
    if not torch.cuda.is_available():  # the GPU check on a machine without one
        res = _run([sys.executable, "benchmarks/device/device_check.py", "--out", str(tmp_path / "gpu")])
        assert res.returncode == 2 and "--cpu" in res.stderr, res.stderr
        assert not (tmp_path / "gpu" / "device_check.json").exists()


def test_device_check_summary_and_cpu_nulls():
    dc = load_benchmark("device/device_check")
    results = {"MfNS_De_2d": {"compile_off": {"train_s_per_iter": 0.3, "infer_s_per_volume": 4.0},
                              "compile_on": {"train_s_per_iter": 0.2, "first_iter_s": 60.0}},
               "nnUNet_2d": {"compile_off": {"train_s_per_iter": 0.1}, "compile_on": {"status": "skipped"}}}
    s = dc.summarise(results)
    assert s["MfNS_De_2d"]["compile_speedup_train"] == pytest.approx(1.5)
    assert s["nnUNet_2d"]["compile_speedup_train"] is None and s["nnUNet_2d"]["train_s_per_iter_compile_on"] is None
    row, reasons = {"train_s_per_iter": 1.0}, {}
    dc._null_gpu_fields(row, "no GPU: --cpu run", reasons)
    assert all(row[f] is None and reasons[f] == "no GPU: --cpu run" for f in dc.GPU_FIELDS)
