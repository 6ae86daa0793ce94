"""Head-to-head orchestration (`mfns-compare`): methods, the resumable pipeline of stock console scripts,
its state file and SLURM emission. See docs/head_to_head.md."""
from nnunetv2_mfns.orchestration.methods import NAMED_METHODS, Method, resolve_methods
from nnunetv2_mfns.orchestration.pipeline import CompareConfig, CompareStepError, Pipeline
from nnunetv2_mfns.orchestration.state import STATE_FILE, CompareState

__all__ = ["NAMED_METHODS", "Method", "resolve_methods", "CompareConfig", "CompareStepError", "Pipeline",
           "STATE_FILE", "CompareState"]
