"""Issue 23's methods in mfns-compare: ResEnc-M 3d_fullres (its own plans file, `-p` on train/predict) and the
non-learned Frangi baseline (tuned on each fold's training cases, predictions written like a method's), the
hard phantom's exact labels as the report's truth, and one end-to-end run with the `ci` budget on the tiny
dataset."""
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from tiny_dataset import make_tiny_dataset_with_subjects, nnunet_env

from nnunetv2_mfns.cli.compare import main
from nnunetv2_mfns.cli.nonlearned_baseline import RECORD, predictions_done
from nnunetv2_mfns.cli.nonlearned_baseline import main as nonlearned_main
from nnunetv2_mfns.orchestration.methods import resolve_methods
from nnunetv2_mfns.orchestration.state import STATE_FILE

BIN = Path(sys.executable).parent




def test_resenc_and_frangi_resolve():
    ms = {m.name: m for m in resolve_methods(["ResEncM_3d", "Frangi", "nnUNet_3d"], "ci")}
    r, f, n = ms["ResEncM_3d"], ms["Frangi"], ms["nnUNet_3d"]
    assert (r.configuration, r.trainer, r.plans) == ("3d_fullres", "nnUNetTrainer_ci", "nnUNetResEncUNetMPlans")
    assert r.results_subfolder == "nnUNetTrainer_ci__nnUNetResEncUNetMPlans__3d_fullres"
    assert n.results_subfolder == "nnUNetTrainer_ci__nnUNetPlans__3d_fullres"  # same trainer, other plans: allowed
    assert f.non_learned == "frangi" and f.configuration == "none"


def test_dry_run_plans_resenc_and_runs_frangi_and_scores_exact_labels(tmp_path, nnunet_dirs, capsys):
    raw = make_tiny_dataset_with_subjects(Path(nnunet_dirs["nnUNet_raw"]))
    (raw / "labels_exact").mkdir()  # a hard phantom: labelsTr = annotator style, labels_exact = truth
    rc = main(["--dataset", "990", "--methods", "ResEncM_3d,Frangi", "--budget", "ci", "--folds", "0",
               "--device", "cpu", "--workdir", str(tmp_path / "work"), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    cmds = [shlex.split(x) for x in out.splitlines() if x.strip() and not x.startswith("#")]
    tools = {Path(c[0]).name: c for c in cmds}
    assert tools["nnUNetv2_plan_experiment"][-2:] == ["-pl", "nnUNetPlannerResEncM"]
    plan = tools["nnUNetv2_plan_and_preprocess"]
    assert plan[plan.index("-c") + 1] == "3d_fullres" and "2d" not in plan  # Frangi needs no plan
    for tool in ("nnUNetv2_train", "nnUNetv2_predict"):
        c = tools[tool]
        assert c[c.index("-p") + 1] == "nnUNetResEncUNetMPlans"
    frangi = next(c for c in cmds if "nnunetv2_mfns.cli.nonlearned_baseline" in c)
    assert frangi[frangi.index("--kind") + 1] == "frangi" and frangi[frangi.index("--fold") + 1] == "0"
    report = tools["mfns-report"]
    assert report[report.index("--gt") + 1] == str(raw / "labels_exact")


def test_nonlearned_baseline_bad_input_is_one_line(tmp_path, capsys):
    assert nonlearned_main(["--raw", str(tmp_path), "--fold", "0", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mfns_splits.json" in err[0] and not (tmp_path / "p").exists()


def _run_steps(workdir):
    doc = json.loads((workdir / STATE_FILE).read_text())
    started = doc["runs"][-1]["started"]
    return [s for s in doc["steps"] if (s.get("start") or s.get("at")) >= started]


def test_end_to_end_resenc_and_frangi_ci_budget(tmp_path):
    """Tiny dataset (8 cases of 10 x 48 x 40): ResEnc-M's planner sizes its batch for an 8 GB GPU, so on a phantom
    even the 2 `ci` iterations take minutes of CPU and GiB of memory (docs/phantom.md)."""
    env = nnunet_env(tmp_path)
    raw = make_tiny_dataset_with_subjects(Path(env["nnUNet_raw"]))
    workdir = tmp_path / "work"
    cmd = [str(BIN / "mfns-compare"), "--dataset", "990", "--methods", "ResEncM_3d,Frangi", "--budget", "ci",
           "--folds", "0", "--device", "cpu", "--workdir", str(workdir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ok = {s["name"] for s in _run_steps(workdir) if s.get("returncode") == 0}
    assert {"plan_nnUNetResEncUNetMPlans", "train_ResEncM_3d_fold0", "predict_ResEncM_3d_fold0",
            "nonlearned_Frangi_fold0", "report"} <= ok
    model = Path(env["nnUNet_results"]) / raw.name / "nnUNetTrainer_ci__nnUNetResEncUNetMPlans__3d_fullres" / "fold_0"
    assert (model / "checkpoint_final.pth").is_file()
    plans = json.loads((model.parent / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"]
    assert arch.endswith("ResidualEncoderUNet")
    pred = workdir / "predictions" / "Frangi" / "fold_0"
    rec = json.loads((pred / RECORD).read_text())
    assert rec["kind"] == "frangi" and not set(rec["test"]) & set(rec["train"])  # tuned on training cases only
    assert np.isfinite(rec["params"]["threshold"]) and rec["params"]["sigmas_mm"]
    splits = json.loads((raw / "mfns_splits.json").read_text())
    lists = {k: sorted(splits["folds"][0][k]) for k in ("train", "val", "test")}
    assert predictions_done(pred, lists, "frangi")
    assert sorted(p.name for p in pred.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in lists["test"])
    text = (workdir / "report" / "report.md").read_text()
    assert "ResEncM_3d" in text and "Frangi" in text
    # the budget table says Frangi was not trained (it used to list the run's budget and checkpoint_best.pth)
    frangi_prov = json.loads((workdir / "provenance.json").read_text())["training"]["Frangi"]
    assert frangi_prov["budget"] == "none (no training)" and frangi_prov["model_folders"] == []
    assert "| Frangi | none | none | none (no training) | no training | none |" in text
    # rerun: nothing is redone
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0
    steps = {s["name"]: s for s in _run_steps(workdir)}
    for name in ("plan_nnUNetResEncUNetMPlans", "train_ResEncM_3d_fold0", "nonlearned_Frangi_fold0"):
        assert "skipped" in steps[name], name


def test_emit_slurm_runs_the_baseline_not_nnunet_for_frangi(tmp_path, nnunet_dirs):
    make_tiny_dataset_with_subjects(Path(nnunet_dirs["nnUNet_raw"]))
    out = tmp_path / "slurm"
    assert main(["--dataset", "990", "--methods", "Frangi,ResEncM_3d", "--budget", "ci", "--folds", "0", "--device",
                 "cpu", "--workdir", str(tmp_path / "work"), "--emit-slurm", str(out)]) == 0
    frangi = (out / "Frangi_fold0.sbatch").read_text()
    assert "nnunetv2_mfns.cli.nonlearned_baseline" in frangi and "nnUNetv2_train" not in frangi
    resenc = (out / "ResEncM_3d_fold0.sbatch").read_text()
    assert "-p nnUNetResEncUNetMPlans" in resenc and "nnUNetv2_train" in resenc
    for p in out.iterdir():
        assert subprocess.run(["bash", "-n", str(p)]).returncode == 0, p.name


def test_budget_table_names_a_non_learned_method_untrained():
    from nnunetv2_mfns.evaluation.budget import budget_markdown, read_budgets
    prov = {"training": {"Frangi": {"trainer": "none", "configuration": "none", "budget": "none (no training)",
                                    "epochs": None, "iterations_per_epoch": None, "checkpoint": "none",
                                    "model_folders": [], "non_learned": "non-learned frangi detector, tuned on "
                                                                        "each fold's training cases only"}}}
    budgets, known = read_budgets(prov, ["Frangi"])
    text = "\n".join(budget_markdown(budgets, known))
    row = next(line for line in text.splitlines() if line.startswith("| Frangi |"))
    assert "no training" in row and "tuned on each fold's training cases" in row
    assert "checkpoint_best" not in row and "schedule unknown" not in row and "no model folders" not in row
