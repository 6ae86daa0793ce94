"""mfns-compare (issue 7): dry run, bad input, SLURM emission, state, and one end-to-end run on a tiny
phantom through the real console scripts, rerun without retraining, and resume of interrupted training."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_dataset import make_tiny_dataset_with_subjects, nnunet_env

from nnunetv2_mfns.cli.compare import main
from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.orchestration.methods import parse_method_spec, resolve_methods
from nnunetv2_mfns.orchestration.state import STATE_FILE, CompareState

BIN = Path(sys.executable).parent




def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_dry_run_prints_exactly_the_commands(tmp_path, nnunet_dirs, capsys):
    raw = make_tiny_dataset_with_subjects(Path(nnunet_dirs["nnUNet_raw"]))
    before = _snapshot(Path(nnunet_dirs["nnUNet_raw"]))
    workdir = tmp_path / "work"
    rc = main(["--dataset", "990", "--methods", "MfNS_De,nnUNet_3d,nnUNet_2d", "--budget", "ci", "--folds", "0,2",
               "--device", "cpu", "--workdir", str(workdir), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    commands = [shlex.split(line) for line in out.splitlines() if line.strip() and not line.startswith("#")]
    for cmd in commands:
        if cmd[0] == "export":
            assert "=" in cmd[1]
            continue
        if os.path.isabs(cmd[0]):
            assert Path(cmd[0]).parent == BIN and os.access(cmd[0], os.X_OK), cmd[0]
        else:
            assert cmd[0] in ("mkdir", "ln") and shutil.which(cmd[0]), cmd
    by_tool = {}
    for cmd in commands:
        by_tool.setdefault(Path(cmd[0]).name, []).append(cmd)
    assert len(by_tool["mfns-make-splits"]) == 1 and len(by_tool["nnUNetv2_plan_and_preprocess"]) == 1
    plan = by_tool["nnUNetv2_plan_and_preprocess"][0]
    assert plan[plan.index("-c") + 1:plan.index("-c") + 3] == ["2d", "3d_fullres"]
    trains = {(c[2], c[3], c[c.index("-tr") + 1]) for c in by_tool["nnUNetv2_train"]}
    assert trains == {(conf, fold, tr) for fold in ("0", "2") for conf, tr in
                      [("2d", "nnUNetTrainerMfNSDe_ci"), ("3d_fullres", "nnUNetTrainer_ci"), ("2d", "nnUNetTrainer_ci")]}
    assert all("--c" not in c for c in by_tool["nnUNetv2_train"])  # nothing trained yet
    assert len(by_tool["nnUNetv2_predict"]) == 6 and all("--disable_tta" in c for c in by_tool["nnUNetv2_predict"])
    # the links are exactly each fold's test group, as mfns-make-splits will write it
    from nnunetv2_mfns.dataset_conversion.splits import splits_from_subjects
    splits = splits_from_subjects(json.loads((raw / "subjects.json").read_text()), seed=0)
    for fold in (0, 2):
        linked = sorted(Path(c[3]).name for c in by_tool["ln"] if Path(c[3]).parent.name == f"fold_{fold}")
        assert linked == sorted(f"{case}_0000.nii.gz" for case in splits["folds"][fold]["test"])
    report = by_tool["mfns-report"][0]
    assert report[report.index("--reference") + 1] == "MfNS_De" and "--allow-missing" in report
    assert all(c[c.index("-chk") + 1] == "checkpoint_final.pth" for c in by_tool["nnUNetv2_predict"])  # short budget
    # the test checkpoint and TTA are options; best = nnU-Net's checkpoint chosen on the validation group
    assert main(["--dataset", "990", "--methods", "MfNS_De", "--budget", "short", "--folds", "1", "--device", "cpu",
                 "--workdir", str(workdir), "--dry-run", "--checkpoint", "best", "--tta"]) == 0
    predict = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if "nnUNetv2_predict" in line]
    assert len(predict) == 1 and "--disable_tta" not in predict[0]
    assert predict[0][predict[0].index("-chk") + 1] == "checkpoint_best.pth"
    assert "predictions_best" in predict[0][predict[0].index("-o") + 1]
    # --budget full and study test checkpoint_best.pth unless told otherwise (issue 11 item 5, issue 10)
    for budget, extra, chk in (("full", [], "checkpoint_best.pth"), ("full", ["--checkpoint", "final"],
                                "checkpoint_final.pth"), ("study", [], "checkpoint_best.pth")):
        assert main(["--dataset", "990", "--methods", "MfNS_De", "--budget", budget, "--folds", "1", "--device",
                     "cpu", "--workdir", str(workdir), "--dry-run"] + extra) == 0
        out = capsys.readouterr().out
        predict = [shlex.split(line) for line in out.splitlines() if "nnUNetv2_predict" in line]
        assert predict[0][predict[0].index("-chk") + 1] == chk
        if budget == "study":
            train = next(line for line in out.splitlines() if "nnUNetv2_train" in line)
            assert "nnUNetTrainerMfNSDe_study" in train
    # a dry run does no work
    assert not workdir.exists()
    assert _snapshot(Path(nnunet_dirs["nnUNet_raw"])) == before


def test_bad_input_fails_before_any_work(tmp_path, nnunet_dirs, monkeypatch, capsys):
    make_tiny_dataset_with_subjects(Path(nnunet_dirs["nnUNet_raw"]))
    workdir = tmp_path / "work"
    base = ["--dataset", "990", "--budget", "ci", "--device", "cpu", "--workdir", str(workdir)]

    assert main(base + ["--methods", "MfNS_De,nnUNetTrainerNoSuchThing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nnUNetTrainerNoSuchThing_ci" in err and len(err.strip().splitlines()) == 1
    # a real class without a budget variant: named, with the way out
    assert main(base + ["--methods", "nnUNetTrainer_5epochs"]) == 2
    assert "--budget full" in capsys.readouterr().err
    assert main(base + ["--methods", "MfNS_De", "--folds", "0,7"]) == 2
    assert "--folds" in capsys.readouterr().err
    # the ci/demo models store no mirroring axes: --tta would silently do nothing, so it is refused
    for budget in ("ci", "demo"):
        assert main(base + ["--methods", "MfNS_De", "--tta", "--budget", budget]) == 2
        err = capsys.readouterr().err
        assert f"--tta with --budget {budget}" in err and len(err.strip().splitlines()) == 1

    # a workdir that belongs to another dataset
    workdir.mkdir()
    CompareState.load_or_create(workdir, "Dataset777_Other").start_run({"argv": "x"})
    assert main(base + ["--methods", "MfNS_De"]) == 2
    err = capsys.readouterr().err
    assert "Dataset777_Other" in err and STATE_FILE in err

    monkeypatch.delenv("nnUNet_results")
    assert main(base[:-1] + [str(tmp_path / "work2"), "--methods", "MfNS_De"]) == 2
    assert "$nnUNet_results is not set" in capsys.readouterr().err

    # nothing was started: no splits, no preprocessing, no second workdir
    assert not (Path(nnunet_dirs["nnUNet_raw"]) / "Dataset990_Tiny" / "mfns_splits.json").exists()
    assert not any(Path(nnunet_dirs["nnUNet_preprocessed"]).iterdir())
    assert not (tmp_path / "work2").exists()
    assert sorted(p.name for p in workdir.iterdir()) == [STATE_FILE]


def test_failing_step_stops_and_names_its_log(tmp_path, nnunet_dirs, capsys):
    raw = make_tiny_dataset_with_subjects(Path(nnunet_dirs["nnUNet_raw"]))
    doc = json.loads((raw / "subjects.json").read_text())
    doc["subjects"]["tiny_003"]["age"] = None  # mfns-make-splits (the first step) refuses this
    (raw / "subjects.json").write_text(json.dumps(doc))
    workdir = tmp_path / "work"
    assert main(["--dataset", "990", "--methods", "MfNS_De", "--budget", "ci", "--device", "cpu",
                 "--workdir", str(workdir)]) == 1
    err = capsys.readouterr().err
    log = workdir / "logs" / "splits.log"
    assert f"error: step splits failed (exit code 2); see {log}" in err
    assert "tiny_003" in log.read_text()
    state = json.loads((workdir / STATE_FILE).read_text())
    assert [(s["name"], s["returncode"]) for s in state["steps"]] == [("splits", 2)]
    assert state["runs"][-1]["status"].startswith("failed")
    assert not any(Path(nnunet_dirs["nnUNet_preprocessed"]).iterdir())  # stopped before preprocessing


def test_unknown_method_through_console_script(tmp_path):
    env = nnunet_env(tmp_path)
    proc = subprocess.run([BIN / "mfns-compare", "--phantom", "--n-subjects", "5", "--methods", "MfNS_Dee",
                           "--budget", "ci", "--device", "cpu", "--workdir", tmp_path / "w"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error: --methods 'MfNS_Dee'" in proc.stderr
    assert not (tmp_path / "w").exists() and not any(Path(env["nnUNet_raw"]).iterdir())


def test_method_resolution():
    assert parse_method_spec("MfNS_De") == ("MfNS_De", "2d", "nnUNetTrainerMfNSDe")
    assert parse_method_spec("nnUNet_3d") == ("nnUNet_3d", "3d_fullres", "nnUNetTrainer")
    assert parse_method_spec("nnUNetTrainerMfNSDe_NoHF") == ("nnUNetTrainerMfNSDe_NoHF", "2d", "nnUNetTrainerMfNSDe_NoHF")
    assert parse_method_spec("nnUNetTrainerMfNSDe_NoHF@3d_fullres")[1] == "3d_fullres"
    with pytest.raises(MfnsInputError, match="configuration"):
        parse_method_spec("nnUNetTrainer@3d_lowres")
    methods = resolve_methods(["MfNS_De", "UNet2D", "nnUNetTrainerMfNSDe_NoAttention"], "demo")
    assert [m.trainer for m in methods] == ["nnUNetTrainerMfNSDe_demo", "nnUNetTrainerUNet2D_PaperRecipe_demo",
                                            "nnUNetTrainerMfNSDe_NoAttention_demo"]
    assert resolve_methods(["nnUNet_2d"], "full")[0].trainer == "nnUNetTrainer"
    with pytest.raises(MfnsInputError, match="twice"):
        resolve_methods(["MfNS_De", "MfNS_De"], "ci", find_class=lambda n: object)
    with pytest.raises(MfnsInputError, match="same model"):
        resolve_methods(["MfNS_De", "nnUNetTrainerMfNSDe"], "ci", find_class=lambda n: object)


def test_one_budget_table_for_trainers_cli_and_report(capsys):
    """The budgets are one table (budget_table.py): every budget has its trainer classes with that schedule,
    mfns-compare offers exactly those (plus `full`), and the report warns for the pipeline-check ones."""
    from nnunetv2_mfns.budget_table import BUDGET_CHOICES, BUDGETS, PIPELINE_CHECK_BUDGETS
    from nnunetv2_mfns.orchestration.methods import budgeted_trainer, find_trainer_class
    from nnunetv2_mfns.orchestration.provenance import budget_description

    assert BUDGET_CHOICES == (*BUDGETS, "full") and PIPELINE_CHECK_BUDGETS == ("ci", "demo")
    for name, b in BUDGETS.items():
        for base in ("nnUNetTrainer", "nnUNetTrainerMfNSDe", "nnUNetTrainerUNet2D_PaperRecipe"):
            cls = find_trainer_class(budgeted_trainer(base, name))
            assert cls is not None and f"{b.epochs} epochs x {b.iterations} iterations" in cls.__doc__
        assert budget_description(name).startswith(f"{name}: {b.epochs} epochs x {b.iterations} training")
    with pytest.raises(SystemExit):
        main(["--budget", "nosuchbudget"])
    assert "choose from 'ci', 'demo', 'study', 'long', 'short', 'full'" in capsys.readouterr().err


def test_emit_slurm_scripts_with_dependencies(tmp_path, nnunet_dirs, capsys):
    make_tiny_dataset_with_subjects(Path(nnunet_dirs["nnUNet_raw"]))
    out = tmp_path / "slurm"
    argv = ["--dataset", "990", "--methods", "MfNS_De,nnUNet_3d", "--budget", "short", "--folds", "0,1",
            "--device", "cuda", "--workdir", str(tmp_path / "work"), "--emit-slurm", str(out),
            "--slurm-header=--time=12:00:00"]
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["prepare.sbatch", "report.sbatch", "submit.sh"] +
                           [f"{m}_fold{f}.sbatch" for m in ("MfNS_De", "nnUNet_3d") for f in (0, 1)])
    fold = (out / "nnUNet_3d_fold1.sbatch").read_text()
    assert "#SBATCH --gres=gpu:1" in fold and "#SBATCH --time=12:00:00" in fold
    assert f"export nnUNet_results={nnunet_dirs['nnUNet_results']}" in fold
    cmds = [shlex.split(line) for line in fold.splitlines() if line.startswith(str(BIN))]
    assert [Path(c[0]).name for c in cmds] == ["nnUNetv2_train", "nnUNetv2_predict"]
    assert cmds[0][1:4] == ["990", "3d_fullres", "1"] and "--c" in cmds[0] and "cuda" in cmds[0]
    assert "--stage prepare" in (out / "prepare.sbatch").read_text()
    assert "--overwrite" not in (out / "report.sbatch").read_text()
    for p in out.iterdir():
        assert subprocess.run(["bash", "-n", str(p)]).returncode == 0, p.name
    # run submit.sh against a fake sbatch that logs its arguments and hands out job ids
    fake = tmp_path / "fakebin"
    fake.mkdir()
    log = tmp_path / "sbatch.log"
    (fake / "sbatch").write_text(f'#!/bin/bash\nn=$(($(wc -l < {log} 2>/dev/null || echo 0) + 100))\n'
                                 f'echo "$n $*" >> {log}\necho $n\n')
    (fake / "sbatch").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    assert subprocess.run(["bash", str(out / "submit.sh")], env=env, capture_output=True).returncode == 0
    jobs = [line.split() for line in log.read_text().splitlines()]
    assert jobs[0][1:] == ["--parsable", "prepare.sbatch"]
    assert all(j[2] == "--dependency=afterok:100" for j in jobs[1:5])
    assert jobs[5][2] == "--dependency=afterok:101:102:103:104" and jobs[5][3] == "report.sbatch"
    # refuses to overwrite the scripts
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err


def test_state_file_records_and_rejects_other_dataset(tmp_path):
    st = CompareState.load_or_create(tmp_path, "Dataset501_PVSPhantom")
    st.start_run({"argv": "mfns-compare --demo", "budget": "demo", "methods": ["MfNS_De"]})
    rec = st.begin_step({"name": "train_x", "kind": "train", "command": "nnUNetv2_train 501 2d 0"})
    st.end_step(rec, 0)
    st.skip_step({"name": "predict_x", "kind": "predict"}, "exists")
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    assert doc["dataset"] == "Dataset501_PVSPhantom" and doc["budget"] == "demo"
    assert doc["steps"][0]["returncode"] == 0 and doc["steps"][0]["wall_s"] >= 0 and doc["steps"][0]["end"]
    assert doc["steps"][1]["skipped"] == "exists"
    with pytest.raises(MfnsInputError, match="Dataset502_Other"):
        CompareState.load_or_create(tmp_path, "Dataset502_Other")
    assert CompareState.load_or_create(tmp_path, "Dataset501_PVSPhantom").doc["steps"]  # same dataset: kept


def _compare(env, workdir, log_name):
    cmd = [str(BIN / "mfns-compare"), "--phantom", "--n-subjects", "5", "--profile", "demo", "--seed", "3",
           "--methods", "MfNS_De,nnUNet_3d", "--budget", "ci", "--folds", "0", "--device", "cpu",
           "--workdir", str(workdir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (workdir.parent / log_name).write_text(proc.stdout + "\n---stderr---\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _run_steps(workdir):
    """Steps recorded by the latest call of mfns-compare."""
    doc = json.loads((workdir / STATE_FILE).read_text())
    started = doc["runs"][-1]["started"]
    return [s for s in doc["steps"] if (s.get("start") or s.get("at")) >= started]


def test_end_to_end_rerun_and_resume(tmp_path):
    env = nnunet_env(tmp_path)
    # augmentation in the training process (what the learning curves use): nnU-Net's planner refuses 0 workers,
    # so mfns-compare must give its planning step at least one
    env["nnUNet_n_proc_DA"] = "0"
    workdir = tmp_path / "work"
    first = _compare(env, workdir, "run1.log")
    report = workdir / "report" / "report.md"
    assert f"report: {report}" in first.stdout and report.is_file()
    text = report.read_text()
    assert "MfNS_De" in text and "nnUNet_3d" in text and "nnUNetv2_train" in text
    steps = _run_steps(workdir)
    assert {s["name"] for s in steps if s.get("returncode") == 0} >= {
        "phantom", "splits", "plan_and_preprocess", "train_MfNS_De_fold0", "predict_MfNS_De_fold0",
        "train_nnUNet_3d_fold0", "predict_nnUNet_3d_fold0", "report"}
    model = (Path(env["nnUNet_results"]) / "Dataset501_PVSPhantom" / "nnUNetTrainerMfNSDe_ci__nnUNetPlans__2d"
             / "fold_0")
    assert (model / "checkpoint_final.pth").is_file()
    prov = json.loads((workdir / "provenance.json").read_text())
    assert prov["versions"]["nnunetv2"] and prov["versions"]["torch"] and "1 epochs x 2" in prov["training budget"]

    # second call: nothing is retrained or re-predicted, and it says so
    final_mtime = (model / "checkpoint_final.pth").stat().st_mtime_ns
    second = _compare(env, workdir, "run2.log")
    steps = _run_steps(workdir)
    assert all("skipped" in s for s in steps), [s["name"] for s in steps if "skipped" not in s]
    assert {s["name"] for s in steps} >= {"train_MfNS_De_fold0", "train_nnUNet_3d_fold0", "predict_MfNS_De_fold0"}
    assert "skip train_MfNS_De_fold0" in second.stdout
    assert (model / "checkpoint_final.pth").stat().st_mtime_ns == final_mtime

    # interrupted training: nnU-Net leaves checkpoint_latest.pth and no checkpoint_final.pth. The ci budget
    # has one epoch, so we make that state exactly (the final checkpoint is an epoch-end checkpoint too).
    # The 3d model is used because its end-of-training validation is the cheaper one on CPU.
    model3d = (Path(env["nnUNet_results"]) / "Dataset501_PVSPhantom" / "nnUNetTrainer_ci__nnUNetPlans__3d_fullres"
               / "fold_0")
    (model3d / "checkpoint_final.pth").rename(model3d / "checkpoint_latest.pth")
    third = _compare(env, workdir, "run3.log")
    steps = {s["name"]: s for s in _run_steps(workdir)}
    train = steps["train_nnUNet_3d_fold0"]
    assert train["returncode"] == 0 and train["resumed"] is True
    assert shlex.split(train["command"])[-1] == "--c"
    assert "resuming interrupted training" in third.stdout
    assert "skipped" in steps["train_MfNS_De_fold0"] and "skipped" in steps["predict_MfNS_De_fold0"]
    assert steps["predict_nnUNet_3d_fold0"]["returncode"] == 0  # new weights -> new predictions
    assert steps["report"]["returncode"] == 0
    assert (model3d / "checkpoint_final.pth").is_file() and not (model3d / "checkpoint_latest.pth").exists()
    assert (model / "checkpoint_final.pth").stat().st_mtime_ns == final_mtime


def test_gpus_run_folds_in_parallel_one_per_gpu(tmp_path, nnunet_dirs, monkeypatch):
    """The scheduling of --gpus without GPUs: every method x fold runs once, at most one per GPU at a time,
    each child restricted to its GPU by CUDA_VISIBLE_DEVICES."""
    import threading
    import time

    from nnunetv2_mfns.cli.compare import build_parser, make_config
    from nnunetv2_mfns.orchestration.pipeline import Pipeline

    make_tiny_dataset_with_subjects(Path(nnunet_dirs["nnUNet_raw"]))
    args = build_parser().parse_args(["--dataset", "990", "--methods", "MfNS_De,nnUNet_2d", "--budget", "ci",
                                      "--device", "cuda", "--gpus", "0,1", "--workdir", str(tmp_path / "w")])
    pipe = Pipeline(make_config(args), out=lambda msg: None)
    pipe.state = CompareState.load_or_create(tmp_path / "w", pipe.name)
    busy, lock, seen, peak = set(), threading.Lock(), [], [0]

    def fake(m, fold, env=None):
        gpu = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert gpu not in busy
            busy.add(gpu)
            peak[0] = max(peak[0], len(busy))
        time.sleep(0.1)
        with lock:
            busy.discard(gpu)
            seen.append((m.name, fold, gpu))

    monkeypatch.setattr(pipe, "train_and_predict", fake)
    pipe.train_all()
    assert sorted((m, f) for m, f, _ in seen) == sorted((m, f) for m in ("MfNS_De", "nnUNet_2d") for f in range(5))
    assert {g for _, _, g in seen} == {"0", "1"} and peak[0] == 2


def test_killed_mid_training_then_rerun_continues_from_checkpoint(tmp_path):
    """Kill the whole mfns-compare process group (SIGKILL, like a lost job) after nnU-Net's first epoch
    checkpoint, then rerun the same command: training continues with --c from that checkpoint."""
    import signal
    import time
    env = nnunet_env(tmp_path)
    workdir = tmp_path / "work"
    cmd = [str(BIN / "mfns-compare"), "--phantom", "--n-subjects", "5", "--profile", "demo", "--seed", "4",
           "--methods", "MfNS_De", "--budget", "demo", "--folds", "0", "--device", "cpu", "--workdir", str(workdir)]
    model = (Path(env["nnUNet_results"]) / "Dataset501_PVSPhantom" / "nnUNetTrainerMfNSDe_demo__nnUNetPlans__2d"
             / "fold_0")
    with open(tmp_path / "killed_run.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 900
        while not (model / "checkpoint_latest.pth").is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, "mfns-compare ended before the first epoch checkpoint"
        assert (model / "checkpoint_latest.pth").is_file(), "no checkpoint_latest.pth within 15 min"
        time.sleep(2)  # let torch.save finish writing the checkpoint
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (model / "checkpoint_final.pth").exists()

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (tmp_path / "rerun.log").write_text(rerun.stdout + rerun.stderr)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    train = {s["name"]: s for s in _run_steps(workdir)}["train_MfNS_De_fold0"]
    assert train["returncode"] == 0 and shlex.split(train["command"])[-1] == "--c"
    assert (model / "checkpoint_final.pth").is_file()
    # the continued run starts after the saved epoch, it does not start over
    logs = sorted(model.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime)
    epochs = [int(line.split("Epoch ")[1]) for line in logs[-1].read_text().splitlines()
              if line.rstrip().split(": ")[-1].startswith("Epoch ") and line.split("Epoch ")[1].strip().isdigit()]
    assert epochs and epochs[0] >= 1, epochs
    assert (workdir / "report" / "report.md").is_file()


def test_help_states_the_test_checkpoint_defaults():
    from nnunetv2_mfns.cli.compare import build_parser
    text = " ".join(build_parser().format_help().split())
    assert "checkpoint_best.pth, chosen on the fold's validation group; the default with --budget full" in text
    assert "Refused with --budget ci/demo" in text


def test_split_digest_bookkeeping(tmp_path):
    """Unit level: which models and prediction folders count as made for the current fold lists."""
    from nnunetv2_mfns.orchestration.digests import (DIGEST_FILE, model_mismatch, move_aside, predictions_current,
                                                     reset_prediction_dir, split_digest, write_model_digest)
    lists = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    other = {"train": ["a", "d"], "val": ["c"], "test": ["b"]}
    digest = split_digest(lists)
    assert digest == split_digest({k: v[::-1] for k, v in lists.items()}) != split_digest(other)
    folder = tmp_path / "Trainer__nnUNetPlans__2d" / "fold_0"
    folder.mkdir(parents=True)
    assert model_mismatch(folder, digest) is None  # no model yet: nothing to distrust
    (folder / "checkpoint_final.pth").write_bytes(b"x")
    assert "without mfns_split_digest.json" in model_mismatch(folder, digest)  # a model of unknown split
    doc = write_model_digest(folder, lists, digest, 0, "Trainer", "2d")
    assert model_mismatch(folder, digest) is None and json.loads((folder / DIGEST_FILE).read_text())["test"] == ["d"]
    assert write_model_digest(folder, lists, digest, 0, "Trainer", "2d")["training_id"] == doc["training_id"]
    assert "other fold lists" in model_mismatch(folder, split_digest(other))
    pred = tmp_path / "pred" / "fold_0"
    assert not predictions_current(pred, doc, "checkpoint_final.pth")
    pred.mkdir(parents=True)
    (pred / "old_case.nii.gz").write_bytes(b"x")
    reset_prediction_dir(pred, doc, folder, "checkpoint_final.pth")
    assert sorted(p.name for p in pred.iterdir()) == [DIGEST_FILE]  # cases of an older split are gone
    assert predictions_current(pred, doc, "checkpoint_final.pth")
    assert not predictions_current(pred, doc, "checkpoint_best.pth")
    assert not predictions_current(pred, dict(doc, training_id="retrained"), "checkpoint_final.pth")
    moved = move_aside(folder)
    assert not folder.exists() and (moved / "checkpoint_final.pth").is_file()
    # nnU-Net's fold auto-detection lists the trainer folder's subfolders named fold_*: the stale copy is not one
    assert moved.parent.parent == folder.parent and not moved.parent.name.startswith("fold_")


def test_changed_cohort_retrains_instead_of_reusing_the_model(tmp_path):
    """Issue 11 item 2: after mfns-make-splits --overwrite on a changed cohort (same seed), a rerun must not
    reuse the model trained on the old fold lists, nor its predictions."""
    from nnunetv2_mfns.orchestration.digests import DIGEST_FILE, split_digest

    env = nnunet_env(tmp_path)
    workdir = tmp_path / "work"
    cmd = [str(BIN / "mfns-compare"), "--phantom", "--n-subjects", "5", "--profile", "demo", "--seed", "5",
           "--methods", "MfNS_De", "--budget", "ci", "--folds", "0", "--device", "cpu", "--workdir", str(workdir)]

    def compare(log_name):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        (tmp_path / log_name).write_text(proc.stdout + "\n---stderr---\n" + proc.stderr)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    compare("run1.log")
    raw = Path(env["nnUNet_raw"]) / "Dataset501_PVSPhantom"
    model = (Path(env["nnUNet_results"]) / "Dataset501_PVSPhantom" / "nnUNetTrainerMfNSDe_ci__nnUNetPlans__2d"
             / "fold_0")
    pred = workdir / "predictions" / "MfNS_De" / "fold_0"
    old = json.loads((raw / "mfns_splits.json").read_text())["folds"][0]
    old_digest = json.loads((model / DIGEST_FILE).read_text())
    assert old_digest["test"] == old["test"] and old_digest["train"] == sorted(old["train"])
    assert json.loads((pred / DIGEST_FILE).read_text())["training_id"] == old_digest["training_id"]

    # the cohort changes (ages corrected), the user remakes the splits with the same seed
    doc = json.loads((raw / "subjects.json").read_text())
    cases = sorted(doc["subjects"])
    ages = [doc["subjects"][c]["age"] for c in cases]
    for c, a in zip(cases, ages[1:] + ages[:1]):
        doc["subjects"][c]["age"] = a
    (raw / "subjects.json").write_text(json.dumps(doc))
    remake = subprocess.run([str(BIN / "mfns-make-splits"), "-d", "501", "--seed", "5", "--overwrite"], env=env,
                            capture_output=True, text=True)
    assert remake.returncode == 0, remake.stderr
    new = json.loads((raw / "mfns_splits.json").read_text())["folds"][0]
    assert (new["train"], new["val"], new["test"]) != (old["train"], old["val"], old["test"])  # precondition
    old_final = (model / "checkpoint_final.pth").stat().st_mtime_ns

    second = compare("run2.log")
    steps = {s["name"]: s for s in _run_steps(workdir)}
    train = steps["train_MfNS_De_fold0"]
    assert "skipped" not in train and train["returncode"] == 0, "the model of the old fold lists was reused"
    assert "--c" not in shlex.split(train["command"])  # trained afresh, not continued from the old weights
    assert "other fold lists" in second.stdout and "stale_MfNS_De_fold0" in steps
    stale = Path(steps["stale_MfNS_De_fold0"]["moved_to"])
    assert stale.parent.name == "mfns_stale" and (stale / "checkpoint_final.pth").stat().st_mtime_ns == old_final
    new_digest = json.loads((model / DIGEST_FILE).read_text())
    assert new_digest["digest"] == split_digest(new) and new_digest["test"] == sorted(new["test"])
    assert steps["predict_MfNS_De_fold0"]["returncode"] == 0
    assert sorted(p.name for p in pred.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in new["test"])
    assert json.loads((pred / DIGEST_FILE).read_text())["training_id"] == new_digest["training_id"]
    prov = json.loads((workdir / "provenance.json").read_text())["training"]["MfNS_De"]
    assert prov == {"trainer": "nnUNetTrainerMfNSDe_ci", "configuration": "2d", "budget": "ci", "epochs": 1,
                    "iterations_per_epoch": 2, "checkpoint": "checkpoint_final.pth", "model_folders": [str(model)],
                    "test_time_augmentation": "off (--disable_tta)", "split_digests": {"0": new_digest["digest"]}}

    # a third call with unchanged lists reuses both
    compare("run3.log")
    steps = {s["name"]: s for s in _run_steps(workdir)}
    assert "skipped" in steps["train_MfNS_De_fold0"] and "skipped" in steps["predict_MfNS_De_fold0"]


def test_tta_follows_what_the_model_stores(tmp_path):
    """Issue 11 item 6: nnUNetv2_predict mirrors only over the axes stored with the model. A model that stores
    none (any trainer, whatever the budget) makes --tta refused before predicting, and provenance reports
    the mirroring that actually ran."""
    from nnunetv2_mfns.orchestration.methods import Method
    from nnunetv2_mfns.orchestration.provenance import check_tta_possible, mirroring_axes, tta_description

    m = Method("X", "2d", "nnUNetTrainerX", "nnUNetTrainerX")
    fold = tmp_path / "fold_0"
    fold.mkdir()
    (fold / "debug.json").write_text(json.dumps({"inference_allowed_mirroring_axes": "None", "num_epochs": "3"}))
    why = check_tta_possible(fold, m)
    assert why and str(fold / "debug.json") in why and "nnUNetTrainerX" in why
    assert tta_description(True, {mirroring_axes(json.loads((fold / "debug.json").read_text()))}).startswith(
        "requested, but the model stores no mirroring axes")
    (fold / "debug.json").write_text(json.dumps({"inference_allowed_mirroring_axes": "(0, 1)"}))
    assert check_tta_possible(fold, m) is None
    assert tta_description(True, {(0, 1)}) == "on: mirroring over axes (0, 1) (stored in the checkpoint)"
    assert tta_description(False, {(0, 1)}) == "off (--disable_tta)"


def test_slurm_prepare_moves_stale_models_for_the_fold_jobs(tmp_path, nnunet_dirs):
    """The SLURM fold jobs run nnUNetv2_train --c directly, so the preparation job must move a model of other
    fold lists aside (else --c would continue it) and empty its outdated prediction folder."""
    from nnunetv2_mfns.cli.compare import build_parser, make_config
    from nnunetv2_mfns.dataset_conversion.splits import splits_from_subjects, write_splits
    from nnunetv2_mfns.orchestration.digests import DIGEST_FILE, split_digest
    from nnunetv2_mfns.orchestration.pipeline import Pipeline

    raw = make_tiny_dataset_with_subjects(Path(nnunet_dirs["nnUNet_raw"]))
    splits = splits_from_subjects(json.loads((raw / "subjects.json").read_text()), seed=0)
    write_splits(splits, Path(nnunet_dirs["nnUNet_preprocessed"]) / raw.name, raw_dataset_dir=raw)
    args = build_parser().parse_args(["--dataset", "990", "--methods", "MfNS_De", "--budget", "ci", "--folds", "0,1",
                                      "--device", "cpu", "--workdir", str(tmp_path / "w")])
    pipe = Pipeline(make_config(args), out=lambda msg: None)
    pipe.state = CompareState.load_or_create(tmp_path / "w", pipe.name)
    pipe.state.start_run({"argv": "test"})
    m = pipe.cfg.methods[0]
    stale, unknown = pipe.layout.model_folder(m, 0), pipe.layout.model_folder(m, 1)
    for folder in (stale, unknown):
        folder.mkdir(parents=True)
        (folder / "checkpoint_latest.pth").write_bytes(b"x")
    (stale / DIGEST_FILE).write_text(json.dumps({"schema": "nnunetv2_mfns.split_digest/1", "digest": "0" * 64}))
    pred0 = pipe.layout.prediction_dir(m, 0)
    pred0.mkdir(parents=True)
    (pred0 / "tiny_007.nii.gz").write_bytes(b"x")
    pipe.prepare_models_for_slurm()
    # fold 0: other lists -> moved aside, folder now holds only the new digest; its old predictions are gone
    assert sorted(p.name for p in stale.iterdir()) == [DIGEST_FILE]
    assert json.loads((stale / DIGEST_FILE).read_text())["digest"] == split_digest(splits["folds"][0])
    assert [s["name"] for s in pipe.state.steps(kind="stale_model")] == ["stale_MfNS_De_fold0", "stale_MfNS_De_fold1"]
    assert sorted(p.name for p in pred0.iterdir()) == [DIGEST_FILE]
    # fold 1: a checkpoint without any digest is of unknown lists: moved aside too, never continued with --c
    assert not (unknown / "checkpoint_latest.pth").exists()
    assert len(list((stale.parent / "mfns_stale").iterdir())) == 2


def test_planner_gets_at_least_one_augmentation_worker():
    """nnU-Net's planner fails with nnUNet_n_proc_DA=0 (valid for training): its step gets 1, other values stay."""
    from nnunetv2_mfns.orchestration.config import planner_env
    assert planner_env({"nnUNet_n_proc_DA": "0", "X": "y"}) == {"nnUNet_n_proc_DA": "1", "X": "y"}
    assert planner_env({"nnUNet_n_proc_DA": "3"})["nnUNet_n_proc_DA"] == "3"
    assert "nnUNet_n_proc_DA" not in planner_env({"X": "y"})
