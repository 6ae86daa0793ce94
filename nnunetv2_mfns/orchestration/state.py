"""`<workdir>/mfns_compare_state.json`: what the head-to-head ran, so a second call can resume.

The file records the dataset, methods, budget, folds, seeds, versions, device and every step with its
command, log file, start/end time, return code and wall time (or why it was skipped). It is rewritten
atomically after every change, so a killed run leaves a readable file.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from nnunetv2_mfns.errors import MfnsInputError, read_json_file
from nnunetv2_mfns.jsonio import write_json_atomic

STATE_FILE = "mfns_compare_state.json"
SCHEMA = "nnunetv2_mfns.compare_state/1"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CompareState:
    """The state document of one workdir. Thread-safe: parallel GPU folds record into it concurrently."""

    def __init__(self, path: Path, doc: dict):
        self.path = Path(path)
        self.doc = doc
        self._lock = threading.Lock()

    @classmethod
    def load_or_create(cls, workdir: Path, dataset: str, overwrite: bool = False) -> "CompareState":
        """Opens the workdir's state; a state that names another dataset is an error (unless overwrite,
        which starts a fresh state)."""
        path = Path(workdir) / STATE_FILE
        doc = read_state(path)
        if doc is not None and doc.get("dataset") != dataset and not overwrite:
            raise MfnsInputError(f"{path}: this workdir belongs to dataset {doc.get('dataset')!r}, not {dataset!r}; "
                                 f"use another --workdir (or --overwrite to start over here)")
        if doc is None or overwrite:
            doc = {"schema": SCHEMA, "dataset": dataset, "created": utc_now(), "runs": [], "steps": []}
        return cls(path, doc)

    def start_run(self, info: dict) -> None:
        """Records one invocation (argv, methods, budget, folds, seeds, versions, device)."""
        with self._lock:
            self.doc.update({k: info[k] for k in ("methods", "budget", "folds", "seeds", "device") if k in info})
            self.doc["runs"].append(dict(info, started=utc_now()))
            self._save()

    def finish_run(self, status: str) -> None:
        with self._lock:
            if self.doc["runs"]:
                self.doc["runs"][-1].update(finished=utc_now(), status=status)
            self._save()

    def begin_step(self, step: dict) -> dict:
        """Adds a running step (name, kind, command, log, ...) and returns its record to finish later."""
        rec = dict(step, start=utc_now(), end=None, returncode=None, wall_s=None, _t0=time.monotonic())
        with self._lock:
            self.doc["steps"].append(rec)
            self._save()
        return rec

    def end_step(self, rec: dict, returncode: int) -> None:
        with self._lock:
            rec.update(end=utc_now(), returncode=int(returncode), wall_s=round(time.monotonic() - rec.pop("_t0"), 2))
            self._save()

    def skip_step(self, step: dict, reason: str) -> None:
        with self._lock:
            self.doc["steps"].append(dict(step, skipped=reason, at=utc_now()))
            self._save()

    def note_step(self, step: dict, reason: str) -> None:
        """Records an action of mfns-compare itself (e.g. a stale model moved aside) with its reason."""
        with self._lock:
            self.doc["steps"].append(dict(step, reason=reason, at=utc_now()))
            self._save()

    def steps(self, **match: Any) -> list[dict]:
        return [s for s in self.doc["steps"] if all(s.get(k) == v for k, v in match.items())]

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self.doc[key] = value
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {**self.doc, "steps": [{k: v for k, v in s.items() if not k.startswith("_")} for s in self.doc["steps"]]}
        write_json_atomic(doc, self.path, indent=1)


def read_state(path: Path) -> Optional[dict]:
    """The state document, None if the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    doc = read_json_file(path, invalid_hint="remove it or use another --workdir")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise MfnsInputError(f"{path}: not an mfns-compare state file (schema {SCHEMA} expected)")
    return doc
