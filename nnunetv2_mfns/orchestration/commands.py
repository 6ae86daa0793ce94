"""The console-script command lines of the head-to-head (stock nnU-Net's and ours), built from the
configuration and the dataset layout. Nothing here runs anything."""
from __future__ import annotations

from nnunetv2_mfns.orchestration.config import CompareConfig, exe
from nnunetv2_mfns.orchestration.layout import SPLITS_FILE, DatasetLayout
from nnunetv2_mfns.orchestration.methods import DEFAULT_PLANS, PLANNER_OF_PLANS, Method


class Commands:
    """One method for each step: the argv list of its console script."""

    def __init__(self, cfg: CompareConfig, layout: DatasetLayout):
        self.cfg = cfg
        self.layout = layout

    def phantom(self) -> list[str]:
        c = self.cfg
        cmd = [exe("mfns-make-phantom"), "-o", str(c.raw_root), "-d", str(c.phantom_id), "--name", c.phantom_name,
               "--n-subjects", str(c.n_subjects), "--seed", str(c.seed), "--profile", c.profile]
        return cmd + (["--overwrite"] if c.overwrite else [])

    def splits(self) -> list[str]:
        cmd = [exe("mfns-make-splits"), "-d", self.layout.dataset_id, "--seed", str(self.cfg.seed),
               "--n-groups", str(self.cfg.n_groups)]
        return cmd + (["--overwrite"] if self.cfg.overwrite else [])

    def plan(self) -> list[str]:
        return [exe("nnUNetv2_plan_and_preprocess"), "-d", self.layout.dataset_id, "-c", *self.cfg.configurations,
                "--verify_dataset_integrity", "-np", "1"]

    def plan_experiment(self, plans: str) -> list[str]:
        """A second plans file (ResEnc-M) over the already fingerprinted dataset; its 3d_fullres reuses the
        preprocessed nnUNetPlans_3d_fullres data, so no preprocessing (issue 23)."""
        return [exe("nnUNetv2_plan_experiment"), "-d", self.layout.dataset_id, "-pl", PLANNER_OF_PLANS[plans]]

    def non_learned(self, m: Method, fold: int) -> list[str]:
        """A non-learned baseline (Frangi): tuned on the fold's training cases, predicts its test cases."""
        import sys

        lay = self.layout
        return [sys.executable, "-m", "nnunetv2_mfns.cli.nonlearned_baseline", "--raw", str(lay.raw), "--fold",
                str(fold), "--kind", m.non_learned, "--out", str(lay.prediction_dir(m, fold))]

    def train(self, m: Method, fold: int, resume: bool) -> list[str]:
        cmd = [exe("nnUNetv2_train"), self.layout.dataset_id, m.configuration, str(fold), "-tr", m.trainer,
               "-device", self.cfg.device] + (["-p", m.plans] if m.plans != DEFAULT_PLANS else [])
        return cmd + (["--c"] if resume else [])

    def predict(self, m: Method, fold: int) -> list[str]:
        lay = self.layout
        cmd = [exe("nnUNetv2_predict"), "-i", str(lay.test_input_dir(fold)), "-o", str(lay.prediction_dir(m, fold)),
               "-d", lay.dataset_id, "-c", m.configuration, "-f", str(fold), "-tr", m.trainer,
               "-device", self.cfg.device]
        cmd += [] if self.cfg.tta else ["--disable_tta"]
        cmd += ["-p", m.plans] if m.plans != DEFAULT_PLANS else []
        # always explicit: nnUNetv2_predict's own default is checkpoint_final.pth
        cmd += ["-chk", self.cfg.checkpoint_file]
        return cmd + ["-npp", "1", "-nps", "1"]

    @property
    def reference(self) -> str:
        names = [m.name for m in self.cfg.methods]
        return "MfNS_De" if "MfNS_De" in names else names[0]

    def report(self, layouts: list[DatasetLayout] | None = None) -> list[str]:
        """mfns-report over every method x fold (x seed: one layout per seed with --seeds)."""
        lay = self.layout
        # hard phantom: labelsTr holds annotator-style training labels, labels_exact the truth that is scored
        truth = lay.raw / "labels_exact" if (lay.raw / "labels_exact").is_dir() else lay.raw / "labelsTr"
        cmd = [exe("mfns-report"), "--gt", str(truth), "--pred"]
        cmd += [f"{m.name}={s.prediction_dir(m, f)}" for m in self.cfg.methods for s in (layouts or [lay])
                for f in self.cfg.folds]
        cmd += ["--subjects", str(lay.raw / "subjects.json"), "--splits", str(lay.raw / SPLITS_FILE),
                "--out", str(lay.workdir / "report"), "--reference", self.reference, "--seed", str(self.cfg.seed),
                "--provenance", str(lay.workdir / "provenance.json"), "--overwrite"]
        if len(self.cfg.folds) < self.cfg.n_groups:
            cmd.append("--allow-missing")  # cases of the folds not run have no prediction
        return cmd
