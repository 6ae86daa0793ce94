"""`mfns-predict --emit-slurm DIR`: a cohort as one SLURM array over the parts plus a final merge job.

predict_parts.sbatch runs `mfns-predict ... --num-parts N --part-id $SLURM_ARRAY_TASK_ID` (each part skips
scans already done, so a requeued or resubmitted task continues where it stopped); merge.sbatch runs
`mfns-predict --merge -o OUT` after every array task has ended (`afterany`: the merge lists what is done,
so one failed task does not block the cohort files of the others). submit.sh submits both. Reuses the
head-to-head's `exe` (absolute console-script paths) and CPU environment defaults.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.orchestration.config import CPU_ENV_DEFAULTS, NNUNET_DIRS, exe


def _header(job: str, logs: Path, extra: list[str]) -> list[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name=mfns_predict_{job}",
             f"#SBATCH --output={logs}/slurm_{job}_%A_%a.log" if job == "parts" else
             f"#SBATCH --output={logs}/slurm_{job}_%j.log"]
    return lines + extra


def emit_slurm(out_dir: Path, predict_argv: list[str], out: Path, num_parts: int, headers: list[str] | None = None,
               overwrite: bool = False) -> list[Path]:
    """Writes predict_parts.sbatch, merge.sbatch and submit.sh into out_dir; returns their paths.

    predict_argv: the mfns-predict arguments of one part, without --emit-slurm / --num-parts / --part-id."""
    if num_parts < 2:
        raise MfnsInputError("--emit-slurm needs --num-parts N with N >= 2 (one array task per part)")
    out_dir = Path(out_dir).resolve()
    logs = out_dir / "logs"
    env_lines = [f"export {v}={shlex.quote(os.environ[v])}" for v in NNUNET_DIRS if os.environ.get(v)]
    env_lines += [f"export {k}=${{{k}:-{v}}}" for k, v in CPU_ENV_DEFAULTS.items()]
    predict = shlex.join([exe("mfns-predict")] + predict_argv + ["--num-parts", str(num_parts), "-q"])
    parts = _header("parts", logs, [f"#SBATCH --array=0-{num_parts - 1}"] + [f"#SBATCH {h}" for h in headers or []])
    parts += ["set -uo pipefail", "# written by mfns-predict --emit-slurm", *env_lines,
              f"{predict} --part-id \"$SLURM_ARRAY_TASK_ID\"",
              "rc=$?", "# 3 = finished, some scans need attention (listed by the merge): not a failed task",
              "if [ $rc -eq 3 ]; then exit 0; fi", "exit $rc"]
    merge = _header("merge", logs, [f"#SBATCH {h}" for h in headers or []])
    merge += ["set -uo pipefail", *env_lines, shlex.join([exe("mfns-predict"), "--merge", "-o", str(Path(out).resolve())])]
    submit = ["#!/bin/bash", "# submits the parts as one array, then the merge after every part has ended",
              "set -euo pipefail", f"cd {shlex.quote(str(out_dir))}", f"mkdir -p {shlex.quote(str(logs))}",
              "arr=$(sbatch --parsable predict_parts.sbatch)",
              "m=$(sbatch --parsable --dependency=afterany:$arr merge.sbatch)",
              "echo \"submitted parts $arr, merge $m\""]
    files = {out_dir / "predict_parts.sbatch": parts, out_dir / "merge.sbatch": merge, out_dir / "submit.sh": submit}
    existing = [p for p in files if p.exists()]
    if existing and not overwrite:
        raise MfnsInputError(f"--emit-slurm {out_dir}: {existing[0].name} exists; pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    for p, lines in files.items():
        p.write_text("\n".join(lines) + "\n")
        p.chmod(0o755)
    return list(files)
