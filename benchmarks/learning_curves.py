"""Learning curves: DSC on each fold's validation cases against training iterations and CPU seconds (issue 10).

The curve points are recorded by the trainers themselves (`nnunetv2_mfns/trainers/learning_curve.py`):
every k epochs a trainer predicts its fold's validation group with nnU-Net's sliding-window predictor (no
mirroring) and measures it with OUR evaluation (`evaluation.metrics.evaluate_case`), next to nnU-Net's
pseudo-Dice, into `learning_curve.csv` in its output folder. Two ways to train:

* `mfns-compare --budget study ...` (the head-to-head: every method's `_study` trainer records its curve
  while it trains, so one training gives both the curve and the tested model), then
  `python benchmarks/learning_curves.py report --results $nnUNet_results/DatasetXXX_Name --out docs/results/...`;
* `python benchmarks/learning_curves.py run --work DIR --trainers A,B --folds 0,1 --epochs E --iters I`
  for any budget: phantom, splits and preprocessing in DIR, each method x fold trained in its own
  subprocess through nnU-Net's `run_training` (resumable from checkpoint_latest.pth: rerun the command),
  then the same report.

Seeds: python/numpy/torch seeded with ``--seed`` at the start of a run, with ``seed + epoch`` when a run
resumes at ``epoch``. Phantom and splits: ``--seed`` too. Methods: a trainer class name (2d),
``NAME@3d_fullres``, or the aliases ``MfNS_De``, ``UNet2D``, ``nnUNet_2d``, ``nnUNet_3d``.
"""
import argparse
import csv
import json
import os
import platform
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ALIASES = {"MfNS_De": "nnUNetTrainerMfNSDe", "UNet2D": "nnUNetTrainerUNet2D_PaperRecipe",
           "nnUNet_2d": "nnUNetTrainer", "nnUNet_3d": "nnUNetTrainer@3d_fullres"}
CSV_FIELDS = ["method", "trainer", "configuration", "fold", "epoch", "iterations", "cpu_s", "wall_s",
              "pseudo_dice", "ema_pseudo_dice", "group", "case", "dsc", "sen", "ppv"]
# budget suffixes of the trainer classes whose curves are read (`_study` from mfns-compare, `__curveExI` from run)
BUDGET_SUFFIX = re.compile(r"(__curve\d+x\d+|_(ci|demo|study|short))$")


def parse_method(spec: str) -> Tuple[str, str]:
    """'MfNS_De' / 'nnUNetTrainerX' / 'nnUNetTrainerX@3d_fullres' -> (trainer class name, configuration)."""
    spec = ALIASES.get(spec, spec)
    name, _, config = spec.partition("@")
    return name, config or "2d"


def method_name(trainer: str, configuration: str) -> str:
    """A results folder's trainer + configuration -> the method's name (alias where there is one)."""
    base = BUDGET_SUFFIX.sub("", trainer)
    spec = base if configuration == "2d" else f"{base}@{configuration}"
    return next((alias for alias, s in ALIASES.items() if s == spec), spec)


def _env(work: Path, threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0",
               nnUNet_compile="false", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    return env


# ---- preparation: phantom, splits, plan + preprocess ------------------------------------------------------------
def prepare(work: Path, dataset_id: int, n_subjects: int, profile: str, seed: int, configs: List[str],
            env: Dict[str, str]) -> str:
    """Idempotent: generates the phantom, the paper's splits and nnU-Net's preprocessing once."""
    name = f"Dataset{dataset_id:03d}_PVSCurves"
    raw = work / "raw" / name
    if not (raw / "dataset.json").is_file():
        from nnunetv2_mfns.dataset_conversion.phantom import generate_cohort
        generate_cohort(work / "raw", n_subjects=n_subjects, seed=seed, profile=profile, dataset_id=dataset_id,
                        dataset_name="PVSCurves", progress=False)
    pre = work / "preprocessed" / name
    if not (pre / "splits_final.json").is_file():
        subprocess.run([_exe("mfns-make-splits"), "-d", str(dataset_id), "--seed", str(seed), "--overwrite"],
                       env=env, check=True)
    missing = [c for c in configs if not (pre / f"nnUNetPlans_{c}").is_dir()]
    if missing or not (pre / "nnUNetPlans.json").is_file():
        from nnunetv2_mfns.orchestration.config import planner_env
        subprocess.run([_exe("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", *configs, "-np", "1",
                        "--verify_dataset_integrity"], env=planner_env(env), check=True)
    return name


def _exe(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


# ---- one trainer x fold (runs in its own subprocess) ------------------------------------------------------------
def _seed_all(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def budgeted_class(base: type, epochs: int, iters: int, val_iters: int, curve_every: int = 1) -> type:
    """``base`` with the curve budget: its own recipe, LR schedule over ``epochs``, checkpoint every epoch and
    a learning-curve point on the validation group every ``curve_every`` epochs (trainers/learning_curve.py)."""
    from nnunetv2_mfns.trainers.budgets import make_schedule_variant
    return make_schedule_variant(base, f"{base.__name__}__curve{epochs}x{iters}", epochs, iters, val_iters,
                                 validation_tta=True, module_name=__name__, curve_every=curve_every)


def train_one(args) -> int:
    """Trains one method on one fold through nnU-Net's own ``run_training``, resuming from
    checkpoint_latest.pth; the trainer writes learning_curve.csv into its output folder."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    from nnunetv2_mfns.orchestration.methods import find_trainer_class

    torch.set_num_threads(args.threads)
    trainer_name, configuration = parse_method(args.method)
    base = find_trainer_class(trainer_name)
    if base is None:
        raise SystemExit(f"trainer {trainer_name} not found")
    cls = budgeted_class(base, args.epochs, args.iters, args.val_iters, args.eval_every)
    name = maybe_convert_to_dataset_name(args.dataset_id)
    pre = Path(os.environ["nnUNet_preprocessed"]) / name
    folder = Path(get_output_folder(name, cls.__name__, "nnUNetPlans", configuration, args.fold))
    if (folder / "checkpoint_final.pth").is_file():
        print(f"{args.method} fold {args.fold}: finished earlier", flush=True)
        return 0
    plans = load_json(str(pre / "nnUNetPlans.json"))
    # nnU-Net's run_training passes --c inside the plans dict (the trainer pops it; its logger resumes with it)
    resume = plans["continue_training"] = (folder / "checkpoint_latest.pth").is_file()
    trainer = cls(plans, configuration, args.fold, load_json(str(pre / "dataset.json")), device=torch.device("cpu"))
    start_epoch = 0
    if resume:
        trainer.load_checkpoint(str(folder / "checkpoint_latest.pth"))
        start_epoch = trainer.current_epoch
    _seed_all(args.seed + start_epoch)
    print(f"{args.method}: {cls.__name__} {configuration} fold {args.fold}, start epoch {start_epoch}", flush=True)
    trainer.run_training()
    return 0


# ---- outputs ----------------------------------------------------------------------------------------------------
def collect_rows(results: Path) -> List[dict]:
    """Every learning_curve.csv under an nnU-Net results dataset folder
    (``<trainer>__<plans>__<configuration>/fold_k/``), each row with its ``method`` name."""
    from nnunetv2_mfns.trainers.learning_curve import CURVE_FILE, read_curve_rows
    rows = []
    for path in sorted(Path(results).glob(f"*__*__*/fold_*/{CURVE_FILE}")):
        trainer, _, configuration = path.parent.parent.name.split("__")
        rows.extend(dict(r, method=method_name(trainer, configuration)) for r in read_curve_rows(path))
    return rows


def summarise(rows: List[dict]) -> Dict[str, List[dict]]:
    """method -> [{iterations, n_folds, n_cases, cpu_s, wall_s, dsc, sen, ppv, pseudo_dice}] sorted by
    iterations: means over every validation case of every fold with that point (cpu/wall: mean over folds)."""
    import numpy as np
    by: Dict[Tuple[str, int], List[dict]] = {}
    for r in rows:
        by.setdefault((r["method"], int(r["iterations"])), []).append(r)
    out: Dict[str, List[dict]] = {}
    for (method, it), rs in sorted(by.items()):
        per_fold = {r["fold"]: r for r in rs}
        point = {"iterations": it, "n_folds": len(per_fold), "n_cases": len(rs),
                 "folds": ",".join(sorted(per_fold)),
                 "cpu_s": float(np.mean([float(r["cpu_s"]) for r in per_fold.values()])),
                 "wall_s": float(np.mean([float(r["wall_s"]) for r in per_fold.values()])),
                 "pseudo_dice": float(np.mean([float(r["pseudo_dice"]) for r in per_fold.values()]))}
        for m in ("dsc", "sen", "ppv"):
            point[m] = float(np.mean([float(r[m]) for r in rs]))
        out.setdefault(method, []).append(point)
    return out


def finished_folds_only(rows: List[dict], budget_its: int) -> Tuple[List[dict], Dict[str, List[str]]]:
    """Per method, the rows of the folds that reached ``budget_its`` (all its rows when none has yet), and
    per method the folds left out because they are still training."""
    reached: Dict[Tuple[str, str], int] = {}
    for r in rows:
        key = (r["method"], r["fold"])
        reached[key] = max(reached.get(key, 0), int(r["iterations"]))
    finished = {m for (m, f), it in reached.items() if it >= budget_its}
    unfinished: Dict[str, List[str]] = {}
    for (m, f), it in sorted(reached.items()):
        if m in finished and it < budget_its:
            unfinished.setdefault(m, []).append(f"fold {f} at {it}")
    kept = [r for r in rows if r["method"] not in finished or reached[(r["method"], r["fold"])] >= budget_its]
    return kept, unfinished


def complete_points(points: List[dict]) -> List[dict]:
    """The points every fold of the method reached (a curve mixing folds at its end would jump)."""
    n = max(p["n_folds"] for p in points)
    return [p for p in points if p["n_folds"] == n]


def plateau_stats(points: List[dict], key: str = "dsc", n_last: int = 3) -> Tuple[float, Optional[int], float]:
    """(plateau = mean of the last ``n_last`` points, first iteration count reaching 95% of it,
    rise over those last points = last value minus the value ``n_last - 1`` points earlier)."""
    vals = [p[key] for p in points]
    tail = vals[-n_last:]
    plateau = sum(tail) / len(tail)
    reach = next((p["iterations"] for p in points if p[key] >= 0.95 * plateau), None)
    return plateau, reach, tail[-1] - tail[0]


def plot(curves: Dict[str, List[dict]], png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, pts in curves.items():
        pts = complete_points(pts)
        for ax, x in zip(axes, ("iterations", "cpu_s")):
            line, = ax.plot([p[x] for p in pts], [p["dsc"] for p in pts], marker="o", ms=3,
                            label=f"{method} ({pts[-1]['n_folds']} fold{'s' if pts[-1]['n_folds'] > 1 else ''})")
            ax.plot([p[x] for p in pts], [p["pseudo_dice"] for p in pts], ls=":", color=line.get_color(), lw=1)
    axes[0].set_xlabel("training iterations")
    axes[1].set_xlabel("training CPU seconds per fold (process time, evaluation excluded)")
    values = [v for pts in curves.values() for p in complete_points(pts) for v in (p["dsc"], p["pseudo_dice"])]
    for ax in axes:
        ax.set_ylabel("DSC")
        # zoomed to the data (the differences between methods are a few DSC points), never beyond [0, 1]
        ax.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}\nsolid: DSC of our evaluation on the folds' validation cases; dotted: nnU-Net "
                 "pseudo-Dice (validation patches)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_outputs(rows: List[dict], out: Path, meta: dict) -> None:
    if not rows:
        raise SystemExit("no learning-curve rows found (learning_curve.csv in the results folders)")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "learning_curves.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    budget_its = meta.get("budget_iterations") or max(int(r["iterations"]) for r in rows)
    # a method's curve pools the folds that finished; folds still training are named, not mixed in
    pooled, unfinished = finished_folds_only(rows, budget_its)
    curves = summarise(pooled)
    plot(curves, out / "learning_curves.png", meta.get("title", "learning curves"))
    commands = meta.get("commands") or [meta.get("command", "")]
    lines = [f"# Learning curves: {meta.get('title', '')}", "",
             "- command(s): " + "; ".join(f"`{c}`" for c in commands),
             f"- seed: {meta.get('seed')} (phantom, splits, training; a resumed run reseeds with seed + epoch)",
             f"- machine: {meta.get('machine', '')}", f"- versions: {meta.get('versions', '')}",
             f"- budget: {meta.get('budget', '')} ({budget_its} iterations)",
             "- evaluated on each fold's validation group with `nnunetv2_mfns.evaluation.metrics.evaluate_case` "
             "(nnU-Net sliding window, no mirroring); DSC = mean over every validation case of the folds listed",
             "- files: `learning_curves.csv` (one row per case, fold and evaluation point), `learning_curves.png` "
             "(DSC vs iterations and vs CPU seconds; dotted = nnU-Net pseudo-Dice)", "",
             "| method | folds | validation cases | eval points | last point (iterations) | DSC at last point | "
             "SEN / PPV at last point | plateau (mean of last 3) | rise over last 3 points | iterations to 95% of "
             "plateau | CPU s per iteration |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method, pts in curves.items():
        pts_c = complete_points(pts)
        last = pts_c[-1]
        plateau, reach, rise = plateau_stats(pts_c)
        if last["iterations"] < budget_its:  # stopped early: no plateau to speak of
            plateau_txt, reach_txt = f"n/a (ends at {last['iterations']} of {budget_its})", "n/a"
        else:
            plateau_txt, reach_txt = f"{plateau:.3f}", str(reach)
        lines.append(f"| {method} | {last['folds']} | {last['n_cases']} | {len(pts_c)} | {last['iterations']} | "
                     f"{last['dsc']:.3f} | {last['sen']:.3f} / {last['ppv']:.3f} | {plateau_txt} | {rise:+.3f} | "
                     f"{reach_txt} | {last['cpu_s'] / last['iterations']:.2f} |")
    if unfinished:
        lines += ["", "Unfinished folds (still training or stopped before the budget), not pooled above: " +
                  "; ".join(f"{m}: {', '.join(v)} iterations" for m, v in unfinished.items()) + "."]
    lines += ["", "## DSC (validation cases, folds reached by every point) by iteration", "",
              "| iterations | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    for it in sorted({p["iterations"] for pts in curves.values() for p in pts}):
        vals = []
        for pts in curves.values():
            p = next((q for q in pts if q["iterations"] == it), None)
            vals.append("" if p is None else f"{p['dsc']:.3f} ({p['n_folds']}f)")
        lines.append(f"| {it} | " + " | ".join(vals) + " |")
    if meta.get("notes"):
        lines += ["", "## Notes", "", meta["notes"]]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def _versions() -> str:
    from importlib.metadata import version
    return ", ".join(f"{p} {version(p)}" for p in ("torch", "nnunetv2")) + f", Python {platform.python_version()}"


def _machine(threads: int) -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch threads {threads}, "
            f"CPU only; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} when written")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Learning curves through nnU-Net's trainers (issue 10 item 2)")
    sub = p.add_subparsers(dest="cmd", required=True)
    rep = sub.add_parser("report", help="CSV + PNG + README from the learning_curve.csv files of a results folder")
    rep.add_argument("--results", type=Path, action="append", required=True,
                     help="nnU-Net results dataset folder ($nnUNet_results/DatasetXXX_Name); repeatable")
    rep.add_argument("--out", type=Path, required=True, help="output folder under docs/results (name with 'curve')")
    rep.add_argument("--meta", type=Path, help="JSON with title, commands, seed, budget, budget_iterations, machine")
    rep.add_argument("--notes-file", type=Path, help="Markdown appended to the README as 'Notes'")
    rep.add_argument("--folds", help="comma-separated folds to include (default: every fold found)")
    for name in ("run", "_train"):
        s = sub.add_parser(name)
        s.add_argument("--work", type=Path, required=True, help="folder for nnU-Net raw/preprocessed/results")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--dataset-id", type=int, default=611)
        s.add_argument("--epochs", type=int, required=True)
        s.add_argument("--iters", type=int, required=True, help="training iterations per epoch")
        s.add_argument("--val-iters", type=int, default=2, help="nnU-Net validation iterations per epoch (pseudo-Dice)")
        s.add_argument("--eval-every", type=int, default=1, help="learning-curve point every k epochs (and the last)")
        s.add_argument("--threads", type=int, default=1)
        if name == "run":
            s.add_argument("--trainers", required=True, help="comma-separated methods (aliases, class names, X@3d_fullres)")
            s.add_argument("--folds", default="0", help="comma-separated folds (default 0)")
            s.add_argument("--n-subjects", type=int, default=10)
            s.add_argument("--profile", default="demo")
            s.add_argument("--out", type=Path, help="write the report here when every run has finished")
            s.add_argument("--title", default="")
        else:
            s.add_argument("--fold", type=int, required=True)
            s.add_argument("--method", required=True)
    args = p.parse_args(argv)

    if args.cmd == "_train":
        return train_one(args)
    if args.cmd == "report":
        for given in [args.meta, args.notes_file, *args.results]:
            if given is not None and not given.exists():
                raise SystemExit(f"{given}: not found")
        meta = json.loads(args.meta.read_text()) if args.meta else {}
        meta.setdefault("versions", _versions())
        if args.notes_file:
            meta["notes"] = args.notes_file.read_text()
        rows = [r for res in args.results for r in collect_rows(res)]
        if args.folds:
            rows = [r for r in rows if r["fold"] in args.folds.split(",")]
        write_outputs(rows, args.out, meta)
        return 0

    work = args.work.resolve()
    env = _env(work, args.threads)
    methods = args.trainers.split(",")
    configs = sorted({parse_method(m)[1] for m in methods})
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    name = prepare(work, args.dataset_id, args.n_subjects, args.profile, args.seed, configs, env)
    meta = {"title": args.title or f"{args.profile} phantom, folds {args.folds}", "seed": args.seed,
            "commands": ["python benchmarks/learning_curves.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))],
            "budget": f"{args.epochs} epochs x {args.iters} iterations (each trainer's own recipe and batch size, LR "
                      f"schedule over this budget), {args.val_iters} nnU-Net validation iterations per epoch, a curve "
                      f"point every {args.eval_every} epochs, phantom profile {args.profile!r}, {args.n_subjects} subjects",
            "budget_iterations": args.epochs * args.iters, "machine": _machine(args.threads), "versions": _versions()}
    (work / "learning_curves_meta.json").write_text(json.dumps(meta, indent=1))
    for fold in [int(f) for f in args.folds.split(",")]:
        for m in methods:
            cmd = [sys.executable, __file__, "_train", "--work", str(work), "--seed", str(args.seed),
                   "--dataset-id", str(args.dataset_id), "--fold", str(fold), "--epochs", str(args.epochs),
                   "--iters", str(args.iters), "--val-iters", str(args.val_iters), "--eval-every", str(args.eval_every),
                   "--threads", str(args.threads), "--method", m]
            rc = subprocess.run(cmd, env=env).returncode
            if rc != 0:
                print(f"{m} fold {fold}: training failed (rc {rc}); rerun the same command to resume", file=sys.stderr)
                return rc
    if args.out:
        write_outputs(collect_rows(work / "results" / name), args.out, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
