"""`--emit-slurm DIR`: the head-to-head as SLURM batch scripts instead of local runs.

One preparation job (`mfns-compare ... --stage prepare`: phantom, splits, plan/preprocess, test-input
links), one job per method x fold (stock `nnUNetv2_train --c` then `nnUNetv2_predict`; `--c` makes a
requeued job continue, and nnU-Net starts fresh when there is no checkpoint yet) and a final job that
reruns `mfns-compare` with the same arguments: everything is done by then, so it only evaluates and
writes the report. `submit.sh` submits them with `--dependency=afterok:` chains.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.orchestration.config import CPU_ENV_DEFAULTS, NNUNET_DIRS, exe
from nnunetv2_mfns.orchestration.pipeline import Pipeline


def _script(job: str, pipe: Pipeline, body: list[str], headers: list[str], gpu: bool) -> str:
    env = pipe.cfg.env
    logs = pipe.workdir / "logs"
    lines = ["#!/bin/bash", f"#SBATCH --job-name=mfns_{job}", f"#SBATCH --output={logs}/slurm_{job}_%j.log"]
    if gpu:
        lines.append("#SBATCH --gres=gpu:1")
    lines += [f"#SBATCH {h}" for h in headers]
    lines += ["set -euo pipefail", f"# written by mfns-compare --emit-slurm for dataset {pipe.name}"]
    for var in NNUNET_DIRS + tuple(CPU_ENV_DEFAULTS):
        if var in env:
            lines.append(f"export {var}={shlex.quote(env[var])}")
    lines.append(f"mkdir -p {shlex.quote(str(logs))}")
    return "\n".join(lines + body) + "\n"


def emit_slurm(pipe: Pipeline, out_dir: Path, compare_argv: list[str], headers: list[str] | None = None,
               overwrite: bool = False) -> list[Path]:
    """Writes prepare.sbatch, <method>_fold<k>.sbatch, report.sbatch and submit.sh into out_dir.

    compare_argv: the mfns-compare arguments to repeat in the prepare and report jobs (without the
    --emit-slurm / --dry-run / --stage options). Returns the written paths (submit.sh last).
    """
    out_dir = Path(out_dir).resolve()
    headers = list(headers or [])
    gpu = pipe.cfg.device == "cuda"
    compare = shlex.join([exe("mfns-compare")] + compare_argv)
    scripts: dict[str, str] = {"prepare": _script("prepare", pipe, [compare + " --stage prepare"], headers, gpu=False)}
    jobs = []
    for m in pipe.cfg.methods:
        for fold in pipe.cfg.folds:
            job = f"{_safe(m.name)}_fold{fold}"
            body = ([shlex.join(pipe.commands.non_learned(m, fold))] if m.non_learned else  # Frangi: no training
                    [shlex.join(pipe.train_cmd(m, fold, resume=True)), shlex.join(pipe.predict_cmd(m, fold))])
            scripts[job] = _script(job, pipe, body, headers, gpu)
            jobs.append(job)
    scripts["report"] = _script("report", pipe, [compare], headers, gpu=False)

    paths = {job: out_dir / f"{job}.sbatch" for job in scripts}
    submit = out_dir / "submit.sh"
    existing = [p for p in list(paths.values()) + [submit] if p.exists()]
    if existing and not overwrite:
        raise MfnsInputError(f"--emit-slurm {out_dir}: {existing[0].name} exists; pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    for job, text in scripts.items():
        paths[job].write_text(text)
    sub = ["#!/bin/bash", "# submits the head-to-head: prepare -> every method x fold -> report", "set -euo pipefail",
           f"cd {shlex.quote(str(out_dir))}",
           "prep=$(sbatch --parsable prepare.sbatch)", "deps=\"\""]
    for job in jobs:
        sub.append(f"j=$(sbatch --parsable --dependency=afterok:$prep {job}.sbatch); deps=\"$deps:$j\"")
    sub += ["rep=$(sbatch --parsable --dependency=afterok$deps report.sbatch)",
            "echo \"submitted prepare $prep, folds$deps, report $rep\""]
    submit.write_text("\n".join(sub) + "\n")
    for p in list(paths.values()) + [submit]:
        p.chmod(0o755)
    return list(paths.values()) + [submit]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name)
