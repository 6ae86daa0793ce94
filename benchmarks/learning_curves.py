"""Learning curves: DSC on a fold's held-out cases against training iterations and CPU seconds (issue 10).

For every trainer of a list, on one dataset and fold, this trains through nnU-Net's own trainer class
(its ``initialize``, ``on_*`` hooks, ``train_step``, data loaders, checkpoints) with a given budget of
epochs x iterations (the class's LR schedule compressed to that budget, as the ``_demo`` budgets do),
and after every ``--eval-every`` epochs predicts the fold's validation cases (and optionally its test
group) with nnU-Net's sliding-window predictor (no mirroring, for speed: the same for every trainer) and
measures them with OUR evaluation (``nnunetv2_mfns.evaluation.metrics.evaluate_case``: DSC, SEN, PPV on
the original-geometry volume), next to nnU-Net's pseudo-Dice (the mean foreground Dice of the epoch's
validation iterations, and its EMA). Each row records epoch, iterations, process CPU seconds and wall
seconds of training (evaluation excluded).

Resumable: each trainer checkpoints every epoch (nnU-Net's ``checkpoint_latest.pth``); a rerun continues
from it, skipping evaluation points already in its CSV. Each trainer runs in its own subprocess (so a
crash or kill loses at most one epoch). Data augmentation runs in the training process
(``nnUNet_n_proc_DA=0``) so that the process CPU time covers it.

Seeds: python/numpy/torch seeded with ``--seed`` at the start of a run, and with ``seed + epoch`` when a
run resumes at ``epoch`` (recorded in the README). Phantom and splits: ``--seed`` too.

Methods: a trainer class name (2d), ``NAME@3d_fullres``, or the aliases ``MfNS_De``, ``UNet2D``,
``nnUNet_2d``, ``nnUNet_3d``.

Usage (demo phantom, fold 0):
    python benchmarks/learning_curves.py run --work /tmp/curves --trainers MfNS_De,UNet2D \\
        --epochs 20 --iters 15 --eval-every 2 --seed 0 --out docs/results/learning_curves_demo
    python benchmarks/learning_curves.py report --work /tmp/curves --out docs/results/learning_curves_demo
"""
import argparse
import csv
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ALIASES = {"MfNS_De": "nnUNetTrainerMfNSDe", "UNet2D": "nnUNetTrainerUNet2D_PaperRecipe",
           "nnUNet_2d": "nnUNetTrainer", "nnUNet_3d": "nnUNetTrainer@3d_fullres"}
CSV_FIELDS = ["method", "trainer", "configuration", "fold", "epoch", "iterations", "cpu_s", "wall_s",
              "pseudo_dice", "ema_pseudo_dice", "group", "case", "dsc", "sen", "ppv", "seed"]


def parse_method(spec: str) -> Tuple[str, str]:
    """'MfNS_De' / 'nnUNetTrainerX' / 'nnUNetTrainerX@3d_fullres' -> (trainer class name, configuration)."""
    spec = ALIASES.get(spec, spec)
    name, _, config = spec.partition("@")
    return name, config or "2d"


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
        # the planner sizes its torch thread pool with nnUNet_n_proc_DA, which must be >= 1 there
        subprocess.run([_exe("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", *configs, "-np", "1",
                        "--verify_dataset_integrity"], env=dict(env, nnUNet_n_proc_DA="1"), check=True)
    return name


def _exe(name: str) -> str:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


# ---- one trainer (runs in its own subprocess) -------------------------------------------------------------------
def _seed_all(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def budgeted_class(base: type, epochs: int, iters: int, val_iters: int) -> type:
    """``base`` with the curve budget: its own recipe, LR schedule over ``epochs``, checkpoint every epoch."""
    from nnunetv2_mfns.trainers.budgets import make_schedule_variant
    return make_schedule_variant(base, f"{base.__name__}__curve{epochs}x{iters}", epochs, iters, val_iters,
                                 validation_tta=True, module_name=__name__)


def _case_keys(pre: Path, fold: int, groups: List[str]) -> Dict[str, List[str]]:
    splits = json.loads((pre / "mfns_splits.json").read_text())
    entry = next(f for f in splits["folds"] if int(f["fold"]) == fold)
    return {g: sorted(entry[g]) for g in groups}


def evaluate_network(trainer, keys: Dict[str, List[str]]) -> List[dict]:
    """Predicts the given preprocessed cases with the trainer's current network; our metrics per case."""
    import SimpleITK as sitk
    import torch
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunetv2_mfns.evaluation.metrics import evaluate_case

    ds_on = trainer.enable_deep_supervision
    if ds_on:
        trainer.set_deep_supervision_enabled(False)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=trainer.device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, trainer.__class__.__name__, None)
    gt_dir = Path(trainer.preprocessed_dataset_folder_base) / "gt_segmentations"
    rows = []
    try:
        for group, group_keys in keys.items():
            dataset = trainer.dataset_class(trainer.preprocessed_dataset_folder, group_keys)
            for k in dataset.identifiers:
                data, _, _, properties = dataset.load_case(k)
                with torch.no_grad():
                    logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data[:]))
                seg = convert_predicted_logits_to_segmentation_with_correct_shape(
                    logits.cpu(), trainer.plans_manager, trainer.configuration_manager, trainer.label_manager,
                    properties)
                gt_img = sitk.ReadImage(str(gt_dir / f"{k}{trainer.dataset_json['file_ending']}"))
                gt = sitk.GetArrayFromImage(gt_img)
                m = evaluate_case(seg > 0, gt > 0, tuple(gt_img.GetSpacing()[::-1]))
                rows.append({"group": group, "case": k, "dsc": m["dsc"], "sen": m["sen"], "ppv": m["ppv"]})
    finally:
        if ds_on:
            trainer.set_deep_supervision_enabled(True)
        trainer.network.train()
    return rows


def _read_rows(path: Path) -> List[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _append_rows(path: Path, rows: List[dict]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)


def train_one(args) -> int:
    """Trains/evaluates one method; resumable. Called in a subprocess with nnU-Net's env already set."""
    import numpy as np
    import torch
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnunetv2_mfns.orchestration.methods import find_trainer_class

    torch.set_num_threads(args.threads)
    trainer_name, configuration = parse_method(args.method)
    base = find_trainer_class(trainer_name)
    if base is None:
        raise SystemExit(f"trainer {trainer_name} not found")
    cls = budgeted_class(base, args.epochs, args.iters, args.val_iters)
    name = maybe_convert_to_dataset_name(args.dataset_id)
    pre = Path(os.environ["nnUNet_preprocessed"]) / name
    plans = load_json(str(pre / "nnUNetPlans.json"))
    dataset_json = load_json(str(pre / "dataset.json"))
    # nnU-Net's run_training passes --c inside the plans dict (the trainer pops it; its logger resumes with it)
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    folder = Path(get_output_folder(name, cls.__name__, "nnUNetPlans", configuration, args.fold))
    plans["continue_training"] = (folder / "checkpoint_latest.pth").is_file()
    trainer = cls(plans, configuration, args.fold, dataset_json, device=torch.device("cpu"))

    out_csv = Path(args.csv)
    state_path = Path(trainer.output_folder) / "curve_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"epochs": {}}
    done_iters = {int(r["iterations"]) for r in _read_rows(out_csv)}
    if state.get("finished"):
        print(f"{args.method}: finished earlier", flush=True)
        return 0
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    start_epoch = 0
    if latest.is_file():
        trainer.load_checkpoint(str(latest))
        start_epoch = trainer.current_epoch
    _seed_all(args.seed + start_epoch)
    prev = state["epochs"].get(str(start_epoch), {"cpu_s": 0.0, "wall_s": 0.0})
    cpu_total, wall_total = float(prev["cpu_s"]), float(prev["wall_s"])
    keys = _case_keys(pre, args.fold, args.groups.split(","))
    trainer.on_train_start()
    print(f"{args.method}: {cls.__name__} {configuration} fold {args.fold}, start epoch {start_epoch}, "
          f"batch {trainer.batch_size}, patch {trainer.configuration_manager.patch_size}", flush=True)
    for epoch in range(trainer.current_epoch, trainer.num_epochs):
        c0, w0 = time.process_time(), time.perf_counter()
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        outs = [trainer.train_step(next(trainer.dataloader_train)) for _ in range(trainer.num_iterations_per_epoch)]
        trainer.on_train_epoch_end(outs)
        with torch.no_grad():
            trainer.on_validation_epoch_start()
            vals = [trainer.validation_step(next(trainer.dataloader_val))
                    for _ in range(trainer.num_val_iterations_per_epoch)]
            trainer.on_validation_epoch_end(vals)
        trainer.on_epoch_end()  # checkpoint_latest (except the last epoch), current_epoch += 1
        cpu_total += time.process_time() - c0
        wall_total += time.perf_counter() - w0
        state["epochs"][str(epoch + 1)] = {"cpu_s": cpu_total, "wall_s": wall_total}
        state_path.write_text(json.dumps(state))
        iterations = (epoch + 1) * trainer.num_iterations_per_epoch
        last = epoch + 1 == trainer.num_epochs
        if ((epoch + 1) % args.eval_every == 0 or last) and iterations not in done_iters:
            pseudo = float(np.nanmean(trainer.logger.get_value("dice_per_class_or_region", step=-1)))
            ema = float(trainer.logger.get_value("ema_fg_dice", step=-1))
            t_eval = time.perf_counter()
            rows = [dict(r, method=args.method, trainer=base.__name__, configuration=configuration, fold=args.fold,
                         epoch=epoch + 1, iterations=iterations, cpu_s=round(cpu_total, 2),
                         wall_s=round(wall_total, 2), pseudo_dice=round(pseudo, 4), ema_pseudo_dice=round(ema, 4),
                         seed=args.seed)
                    for r in evaluate_network(trainer, keys)]
            _append_rows(out_csv, rows)
            summary = {g: round(float(np.mean([r["dsc"] for r in rows if r["group"] == g])), 3) for g in keys}
            print(f"{args.method}: epoch {epoch + 1} it {iterations} cpu {cpu_total:.0f}s DSC {summary} "
                  f"pseudo {pseudo:.3f} (evaluation {time.perf_counter() - t_eval:.0f}s)", flush=True)
    trainer.on_train_end()
    state["finished"] = True
    state_path.write_text(json.dumps(state))
    return 0


# ---- outputs ----------------------------------------------------------------------------------------------------
def summarise(rows: List[dict]) -> Dict[str, List[dict]]:
    """method -> [{iterations, cpu_s, wall_s, dsc_<group>, pseudo_dice, ema}] sorted by iterations."""
    import numpy as np
    by: Dict[Tuple[str, int], List[dict]] = {}
    for r in rows:
        by.setdefault((r["method"], int(r["iterations"])), []).append(r)
    out: Dict[str, List[dict]] = {}
    for (method, it), rs in sorted(by.items()):
        point = {"iterations": it, "cpu_s": float(rs[0]["cpu_s"]), "wall_s": float(rs[0]["wall_s"]),
                 "pseudo_dice": float(rs[0]["pseudo_dice"]), "ema_pseudo_dice": float(rs[0]["ema_pseudo_dice"])}
        for g in sorted({r["group"] for r in rs}):
            for m in ("dsc", "sen", "ppv"):
                point[f"{m}_{g}"] = float(np.mean([float(r[m]) for r in rs if r["group"] == g]))
        point["dsc_all"] = float(np.mean([float(r["dsc"]) for r in rs]))
        out.setdefault(method, []).append(point)
    return out


def plateau_stats(points: List[dict], key: str = "dsc_all", n_last: int = 3) -> Tuple[float, Optional[int]]:
    """Plateau = mean of the last ``n_last`` evaluation points; first iteration count reaching 95% of it."""
    vals = [p[key] for p in points]
    plateau = sum(vals[-n_last:]) / len(vals[-n_last:])
    reach = next((p["iterations"] for p in points if p[key] >= 0.95 * plateau), None)
    return plateau, reach


def plot(curves: Dict[str, List[dict]], png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, pts in curves.items():
        for ax, x in zip(axes, ("iterations", "cpu_s")):
            line, = ax.plot([p[x] for p in pts], [p["dsc_all"] for p in pts], marker="o", ms=3, label=method)
            ax.plot([p[x] for p in pts], [p["pseudo_dice"] for p in pts], ls=":", color=line.get_color(), lw=1)
    axes[0].set_xlabel("training iterations")
    axes[1].set_xlabel("training CPU seconds (process time, evaluation excluded)")
    for ax in axes:
        ax.set_ylabel("DSC")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}\nsolid: DSC of our evaluation on the held-out cases; dotted: nnU-Net pseudo-Dice "
                 "(validation iterations)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_outputs(work: Path, out: Path, meta: dict) -> None:
    rows = []
    for p in sorted((work / "curves").glob("*.csv")):
        rows.extend(_read_rows(p))
    if not rows:
        raise SystemExit(f"no curve rows under {work / 'curves'}")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "learning_curves.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    curves = summarise(rows)
    plot(curves, out / "learning_curves.png", meta.get("title", "learning curves"))
    groups = sorted({r["group"] for r in rows})
    commands = meta.get("commands") or [meta.get("command", "")]
    lines = [f"# Learning curves: {meta.get('title', '')}", "",
             "- command(s): " + "; ".join(f"`{c}`" for c in commands),
             f"- seed: {meta.get('seed')} (phantom, splits, training; a resumed run reseeds with seed + epoch)",
             f"- machine: {meta.get('machine', '')}; load average at start / end: {meta.get('load_start', '?')} / "
             f"{meta.get('load_end', '?')}", f"- versions: {meta.get('versions', '')}",
             f"- budget: {meta.get('budget', '')}",
             f"- evaluated on the fold's {' + '.join(groups)} cases with `nnunetv2_mfns.evaluation.metrics.evaluate_case` "
             "(nnU-Net sliding window, no mirroring); `dsc_all` = mean over those cases",
             "- files: `learning_curves.csv` (one row per case and evaluation point), `learning_curves.png` "
             "(DSC vs iterations and vs CPU seconds; dotted = nnU-Net pseudo-Dice)", "",
             "| method | eval points | final DSC (all) | " + " | ".join(f"final DSC {g}" for g in groups) +
             " | final SEN / PPV (all) | plateau (mean of last 3) | iterations to 95% of plateau | CPU s per iteration |",
             "|---|---|---|" + "---|" * len(groups) + "---|---|---|---|"]
    budget_its = max(p["iterations"] for pts in curves.values() for p in pts)
    for method, pts in curves.items():
        plateau, reach = plateau_stats(pts)
        last = pts[-1]
        if last["iterations"] < budget_its:  # stopped early: no plateau to speak of
            plateau_txt, reach_txt = f"n/a (curve ends at {last['iterations']} of {budget_its} iterations)", "n/a"
        else:
            plateau_txt, reach_txt = f"{plateau:.3f}", str(reach)
        sen = sum(last[f"sen_{g}"] for g in groups if f"sen_{g}" in last) / len(groups)
        ppv = sum(last[f"ppv_{g}"] for g in groups if f"ppv_{g}" in last) / len(groups)
        lines.append(f"| {method} | {len(pts)} | {last['dsc_all']:.3f} | " +
                     " | ".join(f"{last.get(f'dsc_{g}', float('nan')):.3f}" for g in groups) +
                     f" | {sen:.3f} / {ppv:.3f} | {plateau_txt} | {reach_txt} | {last['cpu_s'] / last['iterations']:.2f} |")
    lines += ["", "## DSC (all held-out cases) by iteration", "",
              "| iterations | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    its = sorted({p["iterations"] for pts in curves.values() for p in pts})
    for it in its:
        vals = []
        for pts in curves.values():
            p = next((q for q in pts if q["iterations"] == it), None)
            vals.append("" if p is None else f"{p['dsc_all']:.3f}")
        lines.append(f"| {it} | " + " | ".join(vals) + " |")
    if meta.get("notes"):
        lines += ["", "## Notes", "", meta["notes"]]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def _versions() -> str:
    from importlib.metadata import version
    return ", ".join(f"{p} {version(p)}" for p in ("torch", "nnunetv2")) + f", Python {platform.python_version()}"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Learning curves through nnU-Net's trainers (issue 10 item 2)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "_train", "report"):
        s = sub.add_parser(name)
        s.add_argument("--work", type=Path, required=True, help="folder for nnU-Net raw/preprocessed/results + CSVs")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--out", type=Path, help="output folder under docs/results (name containing 'curve')")
        s.add_argument("--title", default="")
        s.add_argument("--notes-file", type=Path, help="Markdown appended to the README as 'Notes'")
        if name == "report":
            continue
        s.add_argument("--dataset-id", type=int, default=611)
        s.add_argument("--fold", type=int, default=0)
        s.add_argument("--epochs", type=int, required=True)
        s.add_argument("--iters", type=int, required=True, help="training iterations per epoch")
        s.add_argument("--val-iters", type=int, default=2, help="nnU-Net validation iterations per epoch (pseudo-Dice)")
        s.add_argument("--eval-every", type=int, default=1, help="evaluate every k epochs (and after the last)")
        s.add_argument("--groups", default="val", help="held-out groups to evaluate: val, test or val,test")
        s.add_argument("--threads", type=int, default=1)
        if name == "run":
            s.add_argument("--trainers", required=True, help="comma-separated methods (aliases, class names, X@3d_fullres)")
            s.add_argument("--n-subjects", type=int, default=10)
            s.add_argument("--profile", default="demo")
        else:
            s.add_argument("--method", required=True)
            s.add_argument("--csv", required=True)
    args = p.parse_args(argv)

    if args.cmd == "_train":
        return train_one(args)
    work = args.work.resolve()
    meta_path = work / "curves" / "meta.json"
    if args.cmd == "report":
        meta = json.loads(meta_path.read_text())
        if args.notes_file:
            meta["notes"] = args.notes_file.read_text()
        write_outputs(work, args.out or Path(meta["out"]), meta)
        return 0

    env = _env(work, args.threads)
    methods = args.trainers.split(",")
    configs = sorted({parse_method(m)[1] for m in methods})
    (work / "curves").mkdir(parents=True, exist_ok=True)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    prepare(work, args.dataset_id, args.n_subjects, args.profile, args.seed, configs, env)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update(command="python benchmarks/learning_curves.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
                seed=args.seed, machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                f"torch threads {args.threads}, CPU only", versions=_versions(),
                budget=f"{args.epochs} epochs x {args.iters} iterations (each trainer's own recipe and batch size, "
                f"LR schedule over this budget), {args.val_iters} nnU-Net validation iterations per epoch, "
                f"evaluation every {args.eval_every} epochs, fold {args.fold}, phantom profile {args.profile!r}, "
                f"{args.n_subjects} subjects", out=str(args.out or ""),
                title=args.title or f"{args.profile} phantom, fold {args.fold}")
    meta.setdefault("load_start", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    meta_path.write_text(json.dumps(meta, indent=1))
    for m in methods:
        csv_path = work / "curves" / f"{m.replace('@', '_')}.csv"
        cmd = [sys.executable, __file__, "_train", "--work", str(work), "--seed", str(args.seed),
               "--dataset-id", str(args.dataset_id), "--fold", str(args.fold), "--epochs", str(args.epochs),
               "--iters", str(args.iters), "--val-iters", str(args.val_iters), "--eval-every", str(args.eval_every),
               "--groups", args.groups, "--threads", str(args.threads), "--method", m, "--csv", str(csv_path)]
        rc = subprocess.run(cmd, env=env).returncode
        if rc != 0:
            print(f"{m}: training failed (rc {rc}); rerun the same command to resume", file=sys.stderr)
            return rc
    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta_path.write_text(json.dumps(meta, indent=1))
    if args.notes_file:
        meta["notes"] = args.notes_file.read_text()
    if args.out:
        write_outputs(work, args.out, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
