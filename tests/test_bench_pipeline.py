"""benchmarks/bench_pipeline.py in its tiny mode: every JSON field present, positive and consistent.

One run of the real benchmark in a subprocess (nnU-Net reads its folder variables at import time), on
3 demo-profile phantom subjects; a few minutes on a 2-core CPU.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METHODS = {"MfNS_De_2d": ("nnUNetTrainerMfNSDe", "2d"), "nnUNet_2d": ("nnUNetTrainer", "2d"),
           "nnUNet_3d_fullres": ("nnUNetTrainer", "3d_fullres"),
           "UNet2D": ("nnUNetTrainerUNet2D_PaperRecipe", "2d")}


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_pipeline")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", nnUNet_n_proc_DA="1",
               nnUNet_def_n_proc="1", nnUNet_compile="false")
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_pipeline.py"), "--tiny", "--workdir", str(tmp / "work"),
           "--out", str(tmp / "res")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp / "res.json").read_text()), (tmp / "res.md").read_text(), tmp


TOP_KEYS = {"schema", "mode", "command", "date_utc", "versions", "git", "device", "env", "load", "dataset",
            "settings", "memory_method", "methods", "headline", "other_ratios", "runtime_s"}
METHOD_KEYS = {"trainer", "configuration", "network_class", "batch_size", "patch_size", "params", "gmacs_per_patch",
               "train_s_loading_excluded", "train_s_loading_included", "train_s_per_iter_loading_excluded",
               "train_s_per_iter_loading_included", "train_s_per_epoch_loading_excluded",
               "train_s_per_epoch_loading_included", "peak_train_memory_mib", "mirror_axes", "infer_s_per_volume",
               "infer_s_per_volume_mirroring", "infer_s_per_volume_no_mirroring",
               "train_s_per_iter_loading_excluded_min", "train_s_per_iter_loading_included_min",
               "infer_s_per_volume_mirroring_min", "infer_s_per_volume_no_mirroring_min"}


def test_json_top_level_fields(tiny_run):
    """Exact key sets: a field added to the benchmark without a check here fails this test."""
    out, md, _ = tiny_run
    assert set(out) == TOP_KEYS
    assert out["date_utc"].startswith("20") and "T" in out["date_utc"]
    assert set(out["dataset"]) == {"profile", "n_subjects", "seed", "cases", "inference_volume", "generate_s",
                                   "plan_preprocess_s", "plan_command", "reused_from_earlier_run"}
    assert out["dataset"]["reused_from_earlier_run"] is False  # a fresh work folder
    assert out["schema"] == "nnunetv2_mfns.bench_pipeline/1" and out["mode"] == "tiny"
    assert "--tiny" in out["command"]
    for pkg in ("python", "torch", "nnunetv2", "dynamic_network_architectures", "numpy", "nnunetv2-mfns"):
        assert out["versions"][pkg] and out["versions"][pkg] != "not installed", pkg
    assert set(out["git"]) == {"commit", "dirty", "dirty_files"} and out["git"]["commit"] != "unknown"
    assert out["git"]["dirty"] == bool(out["git"]["dirty_files"])
    assert out["device"]["type"] == "cpu" and out["device"]["torch_threads"] == 1 and out["device"]["cpu"]
    assert len(out["load"]["start"]) == len(out["load"]["end"]) == 3
    assert all(x >= 0 for x in out["load"]["start"] + out["load"]["end"])
    assert set(out["env"]) == {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "nnUNet_n_proc_DA", "nnUNet_def_n_proc",
                               "nnUNet_compile"}
    ds = out["dataset"]
    assert ds["profile"] == "demo" and ds["n_subjects"] == 3 == len(ds["cases"]) and ds["seed"] == 0
    assert ds["inference_volume"]["shape_zyx"] == [28, 80, 80]  # the demo profile's volume
    assert all(_positive(s) for s in ds["inference_volume"]["spacing_zyx"])
    assert _positive(ds["generate_s"]) and _positive(ds["plan_preprocess_s"]) and "-c 2d 3d_fullres" in ds["plan_command"]
    assert out["settings"] == {"reps": 1, "infer_reps": 1, "iterations_per_epoch": 250, "tile_step_size": 0.5}
    assert "VmHWM" in out["memory_method"] and _positive(out["runtime_s"])
    assert set(out["methods"]) == set(METHODS)


def test_method_fields_positive(tiny_run):
    out, _, _ = tiny_run
    for key, (trainer, cfg) in METHODS.items():
        r = out["methods"][key]
        assert set(r) == METHOD_KEYS | ({"equal_batch"} if key in ("MfNS_De_2d", "nnUNet_2d") else set()), key
        assert (r["trainer"], r["configuration"]) == (trainer, cfg)
        assert len(r["patch_size"]) == (3 if cfg == "3d_fullres" else 2)
        for field in ("batch_size", "params", "gmacs_per_patch", "peak_train_memory_mib",
                      "train_s_per_iter_loading_excluded", "train_s_per_iter_loading_included",
                      "infer_s_per_volume_mirroring", "infer_s_per_volume_no_mirroring"):
            assert _positive(r[field]), (key, field, r[field])
            if field.startswith(("train_s", "infer_s")):
                assert 0 < r[field + "_min"] <= r[field], (key, field)
        assert r["train_s_per_epoch_loading_excluded"] == pytest.approx(250 * r["train_s_per_iter_loading_excluded"])
        assert r["train_s_per_epoch_loading_included"] == pytest.approx(250 * r["train_s_per_iter_loading_included"])
        assert len(r["train_s_loading_excluded"]) == len(r["train_s_loading_included"]) == 1
        assert all(_positive(t) for t in r["train_s_loading_excluded"] + r["train_s_loading_included"])
        for m in ("mirroring", "no_mirroring"):
            assert len(r["infer_s_per_volume"][m]) == 1 and all(_positive(t) for t in r["infer_s_per_volume"][m])
        assert r["mirror_axes"] == ([0, 1, 2] if cfg == "3d_fullres" else [0, 1])
    assert out["methods"]["MfNS_De_2d"]["batch_size"] == 4  # the paper's recipe
    for key in ("MfNS_De_2d", "nnUNet_2d"):
        e = out["methods"][key]["equal_batch"]
        assert e["batch_size"] == min(out["methods"]["MfNS_De_2d"]["batch_size"], out["methods"]["nnUNet_2d"]["batch_size"])
        assert _positive(e["train_s_per_iter_loading_excluded"]) and _positive(e["peak_train_memory_mib"])
        assert e["train_s_per_iter_loading_excluded_min"] == min(e["train_s_loading_excluded"])


def test_parameter_counts_equal_the_networks_own(tiny_run):
    """Rebuild each trainer's network from the benchmark's plans, the way nnU-Net's predictor does."""
    out, _, tmp = tiny_run
    code = r"""
import json, sys, torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
import nnunetv2_mfns.trainers as T
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
pre = sys.argv[1]
plans = PlansManager(load_json(pre + '/nnUNetPlans.json'))
dj = load_json(pre + '/dataset.json')
res = {}
for key, cls, cfg in json.loads(sys.argv[2]):
    tr_cls = nnUNetTrainer if cls == 'nnUNetTrainer' else getattr(T, cls)
    cm = plans.get_configuration(cfg)
    lm = plans.get_label_manager(dj)
    net = tr_cls.build_network_architecture(plans, cm, 1, lm.num_segmentation_heads, True)
    res[key] = [sum(p.numel() for p in net.parameters()), type(net).__module__ + '.' + type(net).__name__]
print(json.dumps(res))
"""
    pre = tmp / "work" / "preprocessed" / "Dataset987_BenchPipeline"
    spec = json.dumps([[k, t, c] for k, (t, c) in METHODS.items()])
    env = dict(os.environ, OMP_NUM_THREADS="1", nnUNet_raw=str(tmp / "work" / "raw"),
               nnUNet_preprocessed=str(tmp / "work" / "preprocessed"), nnUNet_results=str(tmp / "work" / "results"))
    proc = subprocess.run([sys.executable, "-c", code, str(pre), spec], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    own = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in METHODS:
        assert out["methods"][key]["params"] == own[key][0], key
        assert out["methods"][key]["network_class"] == own[key][1], key
    assert out["methods"]["MfNS_De_2d"]["network_class"].endswith("MfNSDe")
    assert out["methods"]["UNet2D"]["network_class"].endswith("PlainConvUNet")


def test_headline_ratios_and_markdown(tiny_run):
    out, md, _ = tiny_run
    m, s2, s3 = (out["methods"][k] for k in ("MfNS_De_2d", "nnUNet_2d", "nnUNet_3d_fullres"))
    # ratios of the fastest repetitions
    expected = {
        "infer_mfns_vs_3d": min(m["infer_s_per_volume"]["mirroring"]) / min(s3["infer_s_per_volume"]["mirroring"]),
        "infer_mfns_vs_2d": min(m["infer_s_per_volume"]["mirroring"]) / min(s2["infer_s_per_volume"]["mirroring"]),
        "train_mfns_vs_2d_equal_batch": min(m["equal_batch"]["train_s_loading_excluded"])
        / min(s2["equal_batch"]["train_s_loading_excluded"]),
        "memory_mfns_vs_2d_equal_batch": m["equal_batch"]["peak_train_memory_mib"]
        / s2["equal_batch"]["peak_train_memory_mib"],
    }
    assert [h["key"] for h in out["headline"]] == list(expected)
    assert all(set(h) == {"key", "figure", "value", "goal", "met"} for h in out["headline"])
    for h in out["headline"]:
        assert h["value"] == pytest.approx(expected[h["key"]]) and h["met"] == (h["value"] <= float(h["goal"][3:]))
    assert all(_positive(v) for v in out["other_ratios"].values())
    assert out["other_ratios"]["params_mfns_vs_2d"] == pytest.approx(m["params"] / s2["params"])
    assert md.startswith("# Pipeline benchmark") and out["command"] in md
    for h in out["headline"]:
        assert h["figure"] in md
    for key in METHODS:
        assert f"| {key} |" in md
