"""Split digests: which fold lists a model was trained on and which model a prediction folder came from.

nnU-Net's results folder does not record the split a model was trained on, so after
`mfns-make-splits --overwrite` (same seed, subjects added or changed) a finished model would be reused
for a test group it may have trained on. `mfns-compare` therefore writes `mfns_split_digest.json`

- into the nnU-Net fold folder before `nnUNetv2_train` starts (the lists nnU-Net trains and validates
  on, read from the preprocessed `splits_final.json`, plus the fold's test group from `mfns_splits.json`,
  their SHA-256 and a training id), and
- into the prediction folder before `nnUNetv2_predict` starts (the same digest and the model's training
  id, so predictions of a model retrained elsewhere are not reused either).

A model whose digest is missing or differs is moved aside (never deleted) and retrained; see
docs/head_to_head.md, "Split digests", for why retraining rather than refusing.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from nnunetv2_mfns.errors import MfnsInputError, read_json_file
from nnunetv2_mfns.jsonio import write_json_atomic
from nnunetv2_mfns.orchestration.layout import NNUNET_SPLITS_FILE, SPLITS_FILE, DatasetLayout

DIGEST_FILE = "mfns_split_digest.json"
SCHEMA = "nnunetv2_mfns.split_digest/1"
STALE_FOLDER = "mfns_stale"           # not named fold_*: nnU-Net's fold auto-detection must not see it
MODEL_FILES = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def fold_lists(layout: DatasetLayout, fold: int, splits: Optional[dict] = None) -> dict[str, list[str]]:
    """train/val/test of one fold, sorted. With `splits` (the dry run, before any file exists) the lists come
    from that dict; otherwise train/val come from the preprocessed splits_final.json (what nnUNetv2_train
    reads) and must agree with mfns_splits.json, whose test group they are completed with."""
    mfns = splits if splits is not None else layout.read_splits()
    entry = next((f for f in mfns["folds"] if f["fold"] == fold), None)
    if entry is None:
        raise MfnsInputError(f"{layout.raw / SPLITS_FILE}: has no fold {fold}")
    lists = {k: sorted(entry[k]) for k in ("train", "val", "test")}
    if splits is not None:
        return lists
    nn_file = layout.pre / NNUNET_SPLITS_FILE
    nn = read_json_file(nn_file, "nnUNetv2_plan_and_preprocess or mfns-make-splits writes it")
    if not isinstance(nn, list) or len(nn) <= fold:
        raise MfnsInputError(f"{nn_file}: has no fold {fold}")
    if sorted(nn[fold]["train"]) != lists["train"] or sorted(nn[fold]["val"]) != lists["val"]:
        raise MfnsInputError(f"{nn_file}: fold {fold} differs from {layout.raw / SPLITS_FILE}; nnU-Net would train on "
                             f"other lists than the report assumes; rerun mfns-make-splits --overwrite")
    return lists


def split_digest(lists: dict[str, list[str]]) -> str:
    """SHA-256 of the sorted train/val/test lists (canonical JSON)."""
    canon = json.dumps({k: sorted(lists[k]) for k in ("train", "val", "test")}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def read_digest(folder: Path) -> Optional[dict]:
    """The digest record of a model or prediction folder; None when absent or unreadable (treated as unknown)."""
    try:
        doc = read_json_file(Path(folder) / DIGEST_FILE)
    except MfnsInputError:
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None


def has_model(folder: Path) -> bool:
    return any((Path(folder) / f).is_file() for f in MODEL_FILES)


def model_mismatch(folder: Path, digest: str) -> Optional[str]:
    """Why the model in `folder` cannot be used for these fold lists, or None when it can (or there is none)."""
    if not has_model(folder):
        return None
    doc = read_digest(folder)
    if doc is None:
        return (f"{folder} holds a model without {DIGEST_FILE} (trained outside mfns-compare or before it recorded "
                f"splits), so the split it was trained on is unknown")
    if doc.get("digest") != digest:
        return (f"{folder} was trained on other fold lists (split digest {str(doc.get('digest'))[:12]}, "
                f"now {digest[:12]})")
    return None


def move_aside(folder: Path) -> Path:
    """Moves a model folder to <trainer folder>/mfns_stale/fold_k_<UTC time> and returns the new path."""
    folder = Path(folder)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = folder.parent / STALE_FOLDER / f"{folder.name}_{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), str(dest))
    return dest


def write_model_digest(folder: Path, lists: dict[str, list[str]], digest: str, fold: int, trainer: str,
                       configuration: str) -> dict:
    """Records the fold lists beside the model (kept when it exists with the same digest, so a resumed
    training keeps its training id)."""
    folder = Path(folder)
    doc = read_digest(folder)
    if doc is not None and doc.get("digest") == digest and doc.get("training_id"):
        return doc
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc = {"schema": SCHEMA, "digest": digest, "fold": fold, "trainer": trainer, "configuration": configuration,
           "training_id": f"{digest[:12]}-{now}", "written": now, **lists}
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(doc, folder / DIGEST_FILE, indent=1)
    return doc


def predictions_current(pred_dir: Path, model_doc: Optional[dict], checkpoint: str) -> bool:
    """True when pred_dir was written (or started) for this model's training and this checkpoint."""
    doc = read_digest(pred_dir)
    return (doc is not None and model_doc is not None and doc.get("digest") == model_doc.get("digest")
            and doc.get("training_id") == model_doc.get("training_id") and doc.get("checkpoint") == checkpoint)


def predictions_complete(pred_dir: Path, model_doc: Optional[dict], checkpoint: str, test_cases: list[str],
                         file_ending: str) -> bool:
    """True when pred_dir is current for this model and checkpoint and holds every test case."""
    return (predictions_current(pred_dir, model_doc, checkpoint)
            and all((pred_dir / f"{c}{file_ending}").is_file() for c in test_cases))


def reset_prediction_dir(pred_dir: Path, model_doc: dict, model_folder: Path, checkpoint: str) -> None:
    """Empties pred_dir (old cases of another split would be scored too) and records what will be predicted."""
    pred_dir = Path(pred_dir)
    if pred_dir.exists():
        shutil.rmtree(pred_dir)
    pred_dir.mkdir(parents=True)
    doc = {"schema": SCHEMA, "digest": model_doc["digest"], "fold": model_doc["fold"],
           "training_id": model_doc["training_id"], "model_folder": str(model_folder), "checkpoint": checkpoint,
           "test": model_doc["test"]}
    write_json_atomic(doc, pred_dir / DIGEST_FILE, indent=1)
