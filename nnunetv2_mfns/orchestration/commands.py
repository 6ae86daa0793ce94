"""The console-script command lines of the head-to-head (stock nnU-Net's and ours), built from the
configuration and the dataset layout. Nothing here runs anything."""
from __future__ import annotations

from nnunetv2_mfns.orchestration.config import CompareConfig, exe
from nnunetv2_mfns.orchestration.layout import SPLITS_FILE, DatasetLayout
from nnunetv2_mfns.orchestration.methods import Method


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

    def train(self, m: Method, fold: int, resume: bool) -> list[str]:
        cmd = [exe("nnUNetv2_train"), self.layout.dataset_id, m.configuration, str(fold), "-tr", m.trainer,
               "-device", self.cfg.device]
        return cmd + (["--c"] if resume else [])

    def predict(self, m: Method, fold: int) -> list[str]:
        lay = self.layout
        cmd = [exe("nnUNetv2_predict"), "-i", str(lay.test_input_dir(fold)), "-o", str(lay.prediction_dir(m, fold)),
               "-d", lay.dataset_id, "-c", m.configuration, "-f", str(fold), "-tr", m.trainer,
               "-device", self.cfg.device]
        cmd += [] if self.cfg.tta else ["--disable_tta"]
        # always explicit: nnUNetv2_predict's own default is checkpoint_final.pth
        cmd += ["-chk", self.cfg.checkpoint_file]
        return cmd + ["-npp", "1", "-nps", "1"]

    @property
    def reference(self) -> str:
        names = [m.name for m in self.cfg.methods]
        return "MfNS_De" if "MfNS_De" in names else names[0]

    def report(self) -> list[str]:
        lay = self.layout
        cmd = [exe("mfns-report"), "--gt", str(lay.raw / "labelsTr"), "--pred"]
        cmd += [f"{m.name}={lay.prediction_dir(m, f)}" for m in self.cfg.methods for f in self.cfg.folds]
        cmd += ["--subjects", str(lay.raw / "subjects.json"), "--splits", str(lay.raw / SPLITS_FILE),
                "--out", str(lay.workdir / "report"), "--reference", self.reference, "--seed", str(self.cfg.seed),
                "--provenance", str(lay.workdir / "provenance.json"), "--overwrite"]
        if len(self.cfg.folds) < self.cfg.n_groups:
            cmd.append("--allow-missing")  # cases of the folds not run have no prediction
        return cmd
