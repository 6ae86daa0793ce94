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


def make_2d_plans(features, patch=(64, 64), strides=None, batch_size: int = 12, batch_dice: bool = True,
                  arch_class: str = "dynamic_network_architectures.architectures.unet.PlainConvUNet") -> dict:
    """A small nnU-Net 2d plans dict with the default planner's structure, for trainer and network tests."""
    n = len(features)
    strides = strides or [[1, 1]] + [[2, 2]] * (n - 1)
    conf = {
        "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": batch_size,
        "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": [0.5, 0.5],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": arch_class, "arch_kwargs": {
            "n_stages": n, "features_per_stage": list(features), "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [[3, 3]] * n, "strides": strides, "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": batch_dice}
    return {"dataset_name": "Dataset990_Tiny", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [2.0, 0.5, 0.5],
            "original_median_shape_after_transp": [10, *patch], "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
            "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {"0": {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0,
                                                                 "percentile_00_5": -1.0, "percentile_99_5": 1.0,
                                                                 "std": 1.0}},
            "configurations": {"2d": conf}, "continue_training": False}


# ages of the subjects of `make_tiny_dataset_with_subjects`: spread so that age-stratified splits are non-trivial
TINY_AGES = [45.0, 52.0, 58.0, 61.0, 64.0, 67.0, 70.0, 77.0]


def make_tiny_dataset_with_subjects(raw_root: Path, dataset_id: int = 990) -> Path:
    """The tiny dataset (8 training cases, seed 1) plus a subjects.json with ages and sexes, as mfns-compare needs."""
    base, name = make_tiny_dataset(raw_root, dataset_id=dataset_id, n_train=len(TINY_AGES), n_test=0, seed=1)
    subjects = {"schema": "nnunetv2_mfns.subjects/1", "dataset_name": name,
                "subjects": {f"tiny_{i:03d}": {"subject": f"sub-{i:03d}", "age": a, "sex": "FM"[i % 2], "set": "train"}
                             for i, a in enumerate(TINY_AGES)}}
    (base / "subjects.json").write_text(json.dumps(subjects))
    return base
