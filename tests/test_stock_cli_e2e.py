"""End to end through nnU-Net's real console scripts in subprocesses, on CPU, as a user would run them.

The plugin must be found by the stock `nnUNetv2_train` / `nnUNetv2_predict` with no nnUNet_extTrainer set
by hand, and stock training must still work unchanged next to it.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tiny_dataset import make_tiny_dataset, nnunet_env

BIN = Path(sys.executable).parent
# plugin trainers run here -> the network class their debug.json must name
PAPER_RECIPE_NETWORKS = {"nnUNetTrainerMfNSDe_ci": "MfNSDe", "nnUNetTrainerMfNSDe_NoHF_ci": "MfNSDe",
                         "nnUNetTrainerIAANet_ci": "IAANet", "nnUNetTrainerTriSegNet_ci": "TriSegNet"}


def _run(cmd, env, log: Path):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log.write_text(proc.stdout + "\n---stderr---\n" + proc.stderr)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = nnunet_env(tmp)
    base, name = make_tiny_dataset(Path(env["nnUNet_raw"]), dataset_id=990, n_train=6, n_test=1, seed=0)
    _run([BIN / "nnUNetv2_plan_and_preprocess", "-d", "990", "-c", "2d", "3d_fullres", "-np", "1",
          "--verify_dataset_integrity"], env, tmp / "plan.log")
    return tmp, env, base


@pytest.mark.parametrize("configuration,trainer", [
    ("2d", "nnUNetTrainerMfNSDe_ci"),
    ("2d", "nnUNetTrainerMfNSDe_NoHF_ci"),
    ("2d", "nnUNetTrainerIAANet_ci"),
    ("2d", "nnUNetTrainerTriSegNet_ci"),
    ("3d_fullres", "nnUNetTrainer_ci"),
])
def test_train_and_predict_with_stock_cli(planned, configuration, trainer):
    tmp, env, base = planned
    train = _run([BIN / "nnUNetv2_train", "990", configuration, "0", "-tr", trainer, "-device", "cpu"], env,
                 tmp / f"train_{trainer}.log")
    out_folder = Path(env["nnUNet_results"]) / base.name / f"{trainer}__nnUNetPlans__{configuration}" / "fold_0"
    assert (out_folder / "checkpoint_final.pth").is_file(), train.stdout[-2000:]
    if trainer in PAPER_RECIPE_NETWORKS:
        assert "Using trainer" in train.stdout  # found through nnUNet_extTrainer set by our .pth
    pred_dir = tmp / f"pred_{trainer}"
    _run([BIN / "nnUNetv2_predict", "-i", base / "imagesTs", "-o", pred_dir, "-d", "990", "-c", configuration,
          "-f", "0", "-tr", trainer, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"], env,
         tmp / f"predict_{trainer}.log")
    pred_file = pred_dir / "tiny_006.nii.gz"
    assert pred_file.is_file()
    pred, img = sitk.ReadImage(str(pred_file)), sitk.ReadImage(str(base / "imagesTs" / "tiny_006_0000.nii.gz"))
    assert pred.GetSize() == img.GetSize()
    assert np.allclose(pred.GetSpacing(), img.GetSpacing()) and np.allclose(pred.GetOrigin(), img.GetOrigin())
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1}
    debug = json.loads((out_folder / "debug.json").read_text())
    if trainer in PAPER_RECIPE_NETWORKS:
        # the recipe really ran: our network, the paper's batch size and optimiser, HF (or stock) DS targets
        assert debug["network"] == PAPER_RECIPE_NETWORKS[trainer]
        assert int(debug["batch_size"]) == 4
        assert "Adagrad" in debug["optimizer"]
        expected_ds = "nearest" if "NoHF" in trainer else "max"
        transforms = debug["dataloader_train.generator.transforms"]
        assert "DownsampleSegForDSTransformHF" in transforms and f"mode = '{expected_ds}'" in transforms
    else:
        assert debug["network"] == "PlainConvUNet" and "SGD" in debug["optimizer"]
