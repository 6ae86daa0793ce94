"""The project's one atomic JSON writer (the one reader is `nnunetv2_mfns.errors.read_json_file`).

A JSON file that other steps read back (state, splits, provenance, reports) must never be left half
written by a killed process: the text goes to a temporary file in the same folder and replaces the
target with `os.replace`, which is atomic on POSIX and Windows when both are on one file system.
Torch-free and dependency-free so that every part (conversion, evaluation, orchestration) can import it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(obj: Any, path: str | Path, indent: int | None = 2, sort_keys: bool = False,
                      default: Any = None, trailing_newline: bool = True) -> Path:
    """Writes obj as JSON to path atomically (temporary file + os.replace); the parent folder must exist.

    On any error (including KeyboardInterrupt) the temporary file is removed and the old file, if any,
    is left untouched. Returns the path.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, sort_keys=sort_keys, default=default)
            if trailing_newline:
                f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
