"""The cohort files (census.csv, stats.csv, index.html) from the per-scan outputs in OUT.

Reads every done-marker (`scan_state`) and each scan's reports/<name>/census.csv: no image is read, so
merging 10,000 scans costs seconds. An unsharded run ends with this merge; sharded runs (`--num-parts`)
leave it to `mfns-predict --merge -o OUT`, so N parts plus the merge give the same files as one run. Each
file is written to a temporary name and renamed.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from nnunetv2_mfns.errors import MfnsInputError

from . import scan_state
from .naming import BATCH_FILES

logger = logging.getLogger(__name__)


def merge_cohort(out: str | Path) -> dict:
    """Writes the cohort files; returns {"scans": n, "attention": {name: reason}, "failed": {name: reason}}."""
    from nnunetv2_mfns.evaluation.subject_report import write_batch
    out = Path(out)
    markers = [m for m in scan_state.all_markers(out) if m.get("report")]
    if not markers:
        raise MfnsInputError(f"{out}: no finished scan with a report to merge (run mfns-predict first)")
    subjects = []
    for m in markers:
        report = Path(m["report"])
        table_path = out / report.parent / "census.csv"
        if not table_path.is_file():
            raise MfnsInputError(f"{table_path}: missing although {m['name']} is marked done; rerun with --overwrite")
        census = SimpleNamespace(table=pd.read_csv(table_path), stats=m["census_stats"])
        subjects.append({"name": m["name"], "report": report, "census": census, "ratings": m["ratings"],
                         "rating_info": m["rating_info"], "meta": m.get("batch_meta") or {"input": m["input"]}})
    tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=scan_state.state_dir(out)))
    try:
        write_batch(tmp, subjects)
        for name in BATCH_FILES:
            os.replace(tmp / name, out / name)
    finally:
        for p in tmp.glob("*"):
            p.unlink()
        tmp.rmdir()
    failed_dir = scan_state.state_dir(out) / scan_state.FAILED_DIR
    failed = {}
    for p in sorted(failed_dir.glob("*.json")) if failed_dir.is_dir() else []:
        import json
        d = json.loads(p.read_text())
        failed[d["name"]] = d["reason"]
    attention = {m["name"]: m["attention"] for m in markers if m.get("attention")}
    logger.info("cohort of %d scans merged into %s", len(markers), out)
    return {"scans": len(markers), "attention": attention, "failed": failed}
