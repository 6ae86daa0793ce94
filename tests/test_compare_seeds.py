"""`mfns-compare --seeds K` (issue 22): K trainings per method x fold in their own nnU-Net results roots, and a
report that pairs (case, seed) and tests at the level of fold x seed."""
import json
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tiny_dataset import make_tiny_dataset_with_subjects

from nnunetv2_mfns.cli.compare import main
from nnunetv2_mfns.errors import MfnsInputError


def _env_of(cmd: list[str]) -> dict:
    return dict(w.split("=", 1) for w in cmd[1:3]) if cmd[0] == "env" else {}


def test_dry_run_with_seeds_trains_each_fold_once_per_seed_in_its_own_results_root(tmp_path, nnunet_dirs, capsys):
    make_tiny_dataset_with_subjects(Path(nnunet_dirs["nnUNet_raw"]))
    workdir = tmp_path / "work"
    assert main(["--dataset", "990", "--methods", "MfNS_De,nnUNet_2d", "--budget", "ci", "--folds", "0,2",
                 "--device", "cpu", "--workdir", str(workdir), "--dry-run", "--seeds", "3"]) == 0
    lines = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")]
    trains = [c for c in lines if "nnUNetv2_train" in " ".join(c[:4])]
    predicts = [c for c in lines if "nnUNetv2_predict" in " ".join(c[:4])]
    assert len(trains) == len(predicts) == 2 * 2 * 3                    # methods x folds x seeds
    results = Path(nnunet_dirs["nnUNet_results"]).resolve()
    seen = set()
    for c in trains + predicts:
        env = _env_of(c)
        k = int(env["MFNS_TRAINING_SEED"])
        assert env["nnUNet_results"] == str(results / "mfns_seeds" / f"seed_{k}")
        argv = c[3:]
        if Path(argv[0]).name == "nnUNetv2_train":
            seen.add((argv[argv.index("-tr") + 1], argv[3], k))
        else:
            out = Path(argv[argv.index("-o") + 1])
            assert out.parent.name == f"seed_{k}" and out.name == f"fold_{argv[argv.index('-f') + 1]}"
    assert seen == {(t, f, k) for t in ("nnUNetTrainerMfNSDe_ci", "nnUNetTrainer_ci") for f in ("0", "2")
                    for k in range(3)}
    report = next(c for c in lines if Path(c[0]).name == "mfns-report")
    preds = report[report.index("--pred") + 1:report.index("--subjects")]
    assert len(preds) == 12 and {Path(p.split("=", 1)[1]).parent.name for p in preds} == {"seed_0", "seed_1", "seed_2"}
    assert not workdir.exists()
    # without --seeds nothing changes: one training per fold, nnU-Net's own results root, no env prefix
    assert main(["--dataset", "990", "--methods", "MfNS_De", "--budget", "ci", "--folds", "0", "--device", "cpu",
                 "--workdir", str(workdir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "MFNS_TRAINING_SEED" not in out and "seed_" not in out
    assert main(["--dataset", "990", "--methods", "MfNS_De", "--budget", "ci", "--folds", "0", "--device", "cpu",
                 "--workdir", str(workdir), "--dry-run", "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err


def test_report_pairs_case_and_seed_and_tests_fold_x_seed(tmp_path):
    from synthetic_results import make_fake_result_set

    from nnunetv2_mfns.evaluation.fold_stats import fold_level_tests
    from nnunetv2_mfns.evaluation.metrics import evaluate_folders
    from nnunetv2_mfns.evaluation.seed_runs import evaluate_by_seed, split_by_seed
    fake = make_fake_result_set(tmp_path / "fake", n_cases=5, shape=(8, 40, 32), pvs_per_case=(10, 30), seed=2,
                                write_images=False)
    splits = json.loads(fake.splits_json.read_text())
    case_to_fold = {c: f["fold"] for f in splits["folds"] for c in f["test"]}
    # two seeds: seed 1's "predictions" of each method are the other method's (so the seeds differ)
    names = list(fake.pred_dirs)
    pred = {}
    for i, m in enumerate(names):
        for k, src in ((0, fake.pred_dirs[m]), (1, fake.pred_dirs[names[(i + 1) % len(names)]])):
            dst = tmp_path / "p" / m / f"seed_{k}" / "all"
            shutil.copytree(src, dst)
            pred.setdefault(m, []).append(dst)
    groups = split_by_seed(pred)
    assert list(groups) == [0, 1]
    metrics = evaluate_by_seed(groups, lambda g: evaluate_folders(fake.gt_dir, g, case_to_fold, progress=False))
    assert set(metrics["seed"]) == {0, 1} and len(metrics) == 2 * len(metrics[metrics["seed"] == 0])
    t = fold_level_tests(metrics, names[0], metric_names=("dsc",), n_boot=200).iloc[0]
    assert t["unit"] == "fold x seed" and t["n"] == 10 and t["n_units"] == 10   # 5 folds of 1 case x 2 seeds
    a = metrics[(metrics["method"] == t["method"]) & (metrics["metric"] == "dsc")].set_index(["case", "seed"])["value"]
    b = metrics[(metrics["method"] == names[0]) & (metrics["metric"] == "dsc")].set_index(["case", "seed"])["value"]
    assert t["mean_diff"] == pytest.approx((a - b).mean())                    # paired by (case, seed)
    # a method without one of the seeds is refused, naming it
    with pytest.raises(MfnsInputError, match="no prediction folder for seed 1"):
        split_by_seed({names[0]: pred[names[0]], names[1]: pred[names[1]][:1]})


def test_budget_section_names_the_seed_of_each_model_folder():
    from nnunetv2_mfns.evaluation.budget import _fold_name
    assert _fold_name("/r/mfns_seeds/seed_1/Dataset501_X/nnUNetTrainer_ci__nnUNetPlans__2d/fold_0") == "seed_1/fold_0"
    assert _fold_name("/r/Dataset501_X/nnUNetTrainer_ci__nnUNetPlans__2d/fold_3") == "fold_3"
