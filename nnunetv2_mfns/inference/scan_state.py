"""Per-scan completion state of an `mfns-predict` output folder: what makes a run resumable and shardable.

Every output file is written to a temporary name in its own folder and renamed into place (`os.replace`,
atomic on one file system), a report folder is built under a temporary name and renamed as a whole, and
the scan's done-marker `OUT/.mfns-predict/done/<name>.json` is written LAST. A scan counts as finished only
when its marker exists and records the same input (SHA-256 of the file) and the same settings (model,
folds, checkpoint, threshold, minimum size, report on/off): a run killed at any point (`kill -9`) leaves
finished scans complete and untouched, and the rerun redoes exactly the scans without a valid marker.
The marker also carries what the cohort merge needs (census totals, ratings, rating-slice information).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from nnunetv2_mfns.jsonio import write_json_atomic

STATE_DIR = ".mfns-predict"
DONE_DIR = "done"
FAILED_DIR = "failed"
WORK_DIR = "work"


def state_dir(out: Path) -> Path:
    return Path(out) / STATE_DIR


def marker_path(out: Path, name: str) -> Path:
    return state_dir(out) / DONE_DIR / f"{safe_name(name)}.json"


def failed_path(out: Path, name: str) -> Path:
    return state_dir(out) / FAILED_DIR / f"{safe_name(name)}.json"


def safe_name(name: str) -> str:
    """A scan name as one file name (names may hold spaces; '/' never occurs in them)."""
    return name.replace(os.sep, "_")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_marker(out: Path, name: str) -> dict | None:
    p = marker_path(out, name)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def write_marker(out: Path, name: str, doc: dict) -> Path:
    p = marker_path(out, name)
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(doc, p, default=_json_default)


def all_markers(out: Path) -> list[dict]:
    folder = state_dir(out) / DONE_DIR
    docs = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            docs.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(docs, key=lambda d: (d.get("order", 0), d.get("name", "")))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def place_folder(src: Path, dst: Path) -> None:
    """Moves a finished folder into place (a previous one of the same scan is removed first)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
