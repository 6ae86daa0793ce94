"""The trained model `mfns-predict` uses, found and checked before any scan is touched.

Either nnU-Net's coordinates (`-d DATASET -c CONFIGURATION -tr TRAINER -p PLANS`, looked up in
`$nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION`, the folder `nnUNetv2_predict` uses), or
`-m FOLDER`: a training output folder (with plans.json, dataset.json and fold_*) or the unzipped
`nnUNetv2_export_model_to_zip` archive (a results-like tree holding one such folder; -d/-c/-tr/-p pick one if
it holds several). Folds: those given (each must have the checkpoint), else every fold_N that has it
(nnU-Net's own auto-detection; several folds are ensembled by nnU-Net).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError, read_json_file


@dataclass(frozen=True)
class ModelSpec:
    folder: Path
    folds: tuple
    checkpoint: str
    trainer: str
    plans: str
    configuration: str
    dataset: str


def _dataset_folder(results: Path, dataset: str) -> Path:
    if dataset.startswith("Dataset"):
        cand = [results / dataset]
    else:
        try:
            did = int(dataset)
        except ValueError:
            raise MfnsInputError(f"-d {dataset}: expected a dataset id (e.g. 501) or name (Dataset501_PVSPhantom)") from None
        cand = sorted(results.glob(f"Dataset{did:03d}_*"))
    cand = [c for c in cand if c.is_dir()]
    if len(cand) != 1:
        what = "no" if not cand else "several"
        raise MfnsInputError(f"{results}: {what} trained dataset matching -d {dataset}")
    return cand[0]


def _training_folders(root: Path) -> list[Path]:
    if (root / "plans.json").is_file() and (root / "dataset.json").is_file():
        return [root]
    return sorted(p.parent for p in root.glob("*/*/plans.json") if (p.parent / "dataset.json").is_file()) + \
        sorted(p.parent for p in root.glob("*/plans.json") if (p.parent / "dataset.json").is_file())


def resolve_model(dataset: str | None = None, configuration: str | None = None, trainer: str | None = None,
                  plans: str | None = None, model_dir: str | Path | None = None, folds: list[str] | None = None,
                  checkpoint: str = "checkpoint_final.pth") -> ModelSpec:
    """Finds the model folder and folds; MfnsInputError (naming the folder) when anything is missing."""
    if model_dir is not None:
        root = Path(model_dir)
        if not root.is_dir():
            raise MfnsInputError(f"{root}: model folder not found")
        found = _training_folders(root)
        sel = []
        for f in found:
            tr, pl, cf = (f.name.split("__") + ["", "", ""])[:3]
            if ((trainer is None or tr == trainer) and (plans is None or pl == plans)
                    and (configuration is None or cf == configuration)
                    and (dataset is None or f.parent.name == dataset or f.parent.name.startswith(f"Dataset{dataset:0>3}_"))):
                sel.append(f)
        if len(sel) != 1:
            names = ", ".join(str(f.relative_to(root)) or "." for f in found) or "none"
            raise MfnsInputError(f"{root}: {'no' if not sel else 'several'} trained models match "
                                 f"(found: {names}); pick one with -d/-c/-tr/-p")
        folder = sel[0]
    else:
        if dataset is None or configuration is None:
            raise MfnsInputError("give the model as -d DATASET -c CONFIGURATION [-tr TRAINER] or as -m MODEL_FOLDER")
        res = os.environ.get("nnUNet_results")
        if not res:
            raise MfnsInputError("nnUNet_results is not set: set it to nnU-Net's results folder, or give -m MODEL_FOLDER")
        folder = _dataset_folder(Path(res), dataset) / f"{trainer or 'nnUNetTrainer'}__{plans or 'nnUNetPlans'}__{configuration}"
        if not folder.is_dir():
            raise MfnsInputError(f"{folder}: no trained model there (check -d, -c, -tr, -p)")
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise MfnsInputError(f"{folder / name}: missing; not an nnU-Net training output folder")
    ds = read_json_file(folder / "dataset.json")
    channels = ds.get("channel_names") or ds.get("modality") or {}
    if len(channels) != 1:
        raise MfnsInputError(f"{folder / 'dataset.json'}: the model takes {len(channels)} input channels; "
                             f"mfns-predict feeds one T2w scan")
    if folds:
        use = tuple("all" if f == "all" else _fold_int(f) for f in folds)
    else:
        use = tuple(sorted(int(p.name[5:]) for p in folder.glob("fold_*")
                           if p.name[5:].isdigit() and (p / checkpoint).is_file()))
        if not use:
            raise MfnsInputError(f"{folder}: no fold_N/{checkpoint}; train a fold first or choose -chk")
    for f in use:
        ck = folder / f"fold_{f}" / checkpoint
        if not ck.is_file():
            raise MfnsInputError(f"{ck}: checkpoint not found (check -f and -chk)")
    tr, pl, cf = (folder.name.split("__") + ["", "", ""])[:3]
    return ModelSpec(folder=folder, folds=use, checkpoint=checkpoint, trainer=tr, plans=pl, configuration=cf,
                     dataset=folder.parent.name)


def _fold_int(f: str) -> int:
    try:
        return int(f)
    except ValueError:
        raise MfnsInputError(f"-f {f}: a fold is an integer or 'all'") from None
