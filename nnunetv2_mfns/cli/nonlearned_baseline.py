"""Non-learned baseline of `mfns-compare` (issue 23): Frangi vesselness or local-contrast threshold, tuned on one
fold's training cases only and applied to that fold's test cases; predictions written like a method's.

    python -m nnunetv2_mfns.cli.nonlearned_baseline --raw $nnUNet_raw/Dataset601_PVSHard --fold 0 \\
        --kind frangi --out work/predictions/Frangi/fold_0

The fold lists come from the dataset's mfns_splits.json (`mfns-make-splits`); tuning reads the training cases'
images and their labelsTr labels (what a user has: for the hard phantom the annotator-style labels, never the
exact truth), chooses the sigma set (Frangi) and the threshold that maximise the pooled Dice over them
(evaluation/detectors.py), and writes one uint8 mask per test case with the image's geometry, plus
`mfns_nonlearned.json` (kind, parameters, fold lists and their digest). Everything is written into a temporary
folder and renamed, so a failed run leaves no half-written folder; an existing --out is replaced only when its
record says it is this baseline's (mfns-compare reruns it when the fold lists change).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError

RECORD = "mfns_nonlearned.json"
KINDS = ("frangi", "local_contrast")


def _digest(lists: dict) -> str:
    from nnunetv2_mfns.orchestration.digests import split_digest

    return split_digest(lists)


def predictions_done(pred_dir: Path, lists: dict, kind: str) -> bool:
    """True when pred_dir holds this baseline's predictions of every test case for these fold lists."""
    rec = Path(pred_dir) / RECORD
    if not rec.is_file():
        return False
    try:
        doc = json.loads(rec.read_text())
    except (OSError, ValueError):
        return False
    return (doc.get("digest") == _digest(lists) and doc.get("kind") == kind
            and all((Path(pred_dir) / f"{c}.nii.gz").is_file() for c in lists["test"]))


def _fold_lists(raw: Path, fold: int) -> dict:
    f = raw / "mfns_splits.json"
    if not f.is_file():
        raise MfnsInputError(f"{f}: not found; run mfns-make-splits first")
    try:
        doc = json.loads(f.read_text())
        entry = next((x for x in doc["folds"] if x["fold"] == fold), None)
    except (ValueError, KeyError, TypeError) as e:
        raise MfnsInputError(f"{f}: not a mfns_splits.json ({e})") from None
    if entry is None:
        raise MfnsInputError(f"{f}: has no fold {fold}")
    return {k: sorted(entry[k]) for k in ("train", "val", "test")}


def _read(path: Path, role: str):
    import SimpleITK as sitk

    if not path.is_file():
        raise MfnsInputError(f"{path}: {role} not found")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise MfnsInputError(f"{path}: cannot read {role} ({str(e).strip().splitlines()[-1]})") from None
    return img, sitk.GetArrayFromImage(img)


def run(raw: Path, fold: int, kind: str, out: Path) -> dict:
    import numpy as np
    import SimpleITK as sitk

    from nnunetv2_mfns.evaluation.detectors import tune

    lists = _fold_lists(raw, fold)
    if not lists["train"] or not lists["test"]:
        raise MfnsInputError(f"{raw / 'mfns_splits.json'}: fold {fold} has an empty training or test group")
    if out.exists() and not (out / RECORD).is_file() and any(out.iterdir()):
        raise MfnsInputError(f"{out}: exists and is not a {kind} prediction folder; refusing to replace it")
    images, labels, spacing = [], [], None
    for case in lists["train"]:
        img, arr = _read(raw / "imagesTr" / f"{case}_0000.nii.gz", "image")
        _, lab = _read(raw / "labelsTr" / f"{case}.nii.gz", "label")
        sp = tuple(reversed(img.GetSpacing()))
        spacing = spacing or sp
        if arr.shape != lab.shape:
            raise MfnsInputError(f"{raw / 'labelsTr' / case}.nii.gz: shape {lab.shape} != image {arr.shape}")
        images.append(arr.astype(np.float32))
        labels.append(lab > 0)
    t0 = time.process_time()
    det = tune(kind, images, labels, spacing)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for case in lists["test"]:
            img, arr = _read(raw / "imagesTr" / f"{case}_0000.nii.gz", "image")
            pred = det.predict(arr.astype(np.float32), tuple(reversed(img.GetSpacing())))
            o = sitk.GetImageFromArray(pred.astype(np.uint8))
            o.CopyInformation(img)
            sitk.WriteImage(o, str(tmp / f"{case}.nii.gz"), useCompression=True)
        doc = {"schema": "nnunetv2_mfns.nonlearned/1", "kind": kind, "fold": fold, "params": det.as_dict(),
               "tuned_on": "the fold's training cases (labelsTr), never its test cases", **lists,
               "digest": _digest(lists), "cpu_s": round(time.process_time() - t0, 1)}
        (tmp / RECORD).write_text(json.dumps(doc, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nnunetv2_mfns.cli.nonlearned_baseline",
                                description=__doc__.splitlines()[0])
    p.add_argument("--raw", type=Path, required=True, help="nnU-Net raw dataset folder with mfns_splits.json")
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--kind", choices=KINDS, default="frangi")
    p.add_argument("--out", type=Path, required=True, help="prediction folder of this fold")
    a = p.parse_args(argv)
    try:
        doc = run(a.raw, a.fold, a.kind, a.out)
    except MfnsInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.kind} fold {a.fold}: {doc['params']} -> {a.out} ({len(doc['test'])} test cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
