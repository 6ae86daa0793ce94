"""A tiny PVS-like nnU-Net raw dataset for plumbing tests (not the phantom: no anatomy, seconds to make)."""
import json
import os
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import SimpleITK as sitk


def make_tiny_case(rng: np.random.Generator, shape: Tuple[int, int, int] = (10, 48, 40)):
    """T2-like volume (z, y, x) with bright short tubes (labelled) and bright blobs (not labelled)."""
    z, y, x = shape
    img = rng.normal(400, 15, size=shape).astype(np.float32)
    lab = np.zeros(shape, dtype=np.uint8)
    for _ in range(rng.integers(6, 12)):  # PVS: 1-voxel-wide tubes running through 2-4 slices
        cz, cy, cx = rng.integers(1, z - 4), rng.integers(3, y - 3), rng.integers(3, x - 3)
        length = rng.integers(2, 5)
        lab[cz:cz + length, cy, cx] = 1
    img[lab > 0] += 450
    for _ in range(2):  # confounder: a lacune-like bright ovoid, not labelled
        cz, cy, cx = rng.integers(1, z - 1), rng.integers(5, y - 5), rng.integers(5, x - 5)
        img[cz, cy - 2:cy + 2, cx - 2:cx + 2] += 600
        lab[cz, cy - 2:cy + 2, cx - 2:cx + 2] = 0
    return img, lab


def _write(arr: np.ndarray, path: Path, spacing=(0.9, 0.9, 2.0)):
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing(spacing)
    sitk.WriteImage(im, str(path), useCompression=True)


def make_tiny_dataset(raw_root: Path, dataset_id: int = 990, n_train: int = 6, n_test: int = 1,
                      seed: int = 0, shape=(10, 48, 40)) -> Tuple[Path, str]:
    """Writes Dataset<id>_Tiny into raw_root; returns (dataset folder, dataset name)."""
    rng = np.random.default_rng(seed)
    name = f"Dataset{dataset_id:03d}_Tiny"
    base = Path(raw_root) / name
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train + n_test):
        img, lab = make_tiny_case(rng, shape)
        if i < n_train:
            _write(img, base / "imagesTr" / f"tiny_{i:03d}_0000.nii.gz")
            _write(lab, base / "labelsTr" / f"tiny_{i:03d}.nii.gz")
        else:
            _write(img, base / "imagesTs" / f"tiny_{i:03d}_0000.nii.gz")
    dataset_json: Dict = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "PVS": 1},
                          "numTraining": n_train, "file_ending": ".nii.gz", "name": "Tiny"}
    (base / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return base, name


def nnunet_env(tmp: Path) -> Dict[str, str]:
    """Environment for stock nnU-Net subprocesses: only nnU-Net's own variables, CPU-friendly worker counts.
    nnUNet_extTrainer is removed on purpose: discovery must come from the installed .pth file."""
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp / var).mkdir(parents=True, exist_ok=True)
        env[var] = str(tmp / var)
    env.update(nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               nnUNet_compile="false")
    return env
