"""The training budget a report's numbers come from, and the warning when they are not accuracy results.

Read from `provenance["training"]` (written by mfns-compare, docs/interfaces.md):
    {method: {"trainer": str, "configuration": str, "budget": str, "epochs": int,
              "iterations_per_epoch": int, "checkpoint": str, "model_folders": [str, ...]}}
A report opens with this budget (issue 10). Its first lines carry a one-line warning that the numbers are
not accuracy results when a method was trained with a pipeline-check budget (`ci`, `demo`) or when its
validation curve (nnU-Net's EMA pseudo-Dice, evaluation/convergence.py) was still rising or too short to
judge at the end of training. Without that provenance the report says that the budget is unknown.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nnunetv2_mfns.budget_table import BUDGETS, PIPELINE_CHECK_BUDGETS
from nnunetv2_mfns.errors import MfnsInputError

from .convergence import Convergence, read_convergence



@dataclass
class MethodBudget:
    method: str
    entry: dict | None  # provenance["training"][method], None when absent
    curves: list[Convergence] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Why this method's numbers are not accuracy results (empty when nothing says so)."""
        if self.entry is None:
            return []
        out = []
        b = self.entry.get("budget")
        if b in PIPELINE_CHECK_BUDGETS:
            out.append(f"trained with the `{b}` budget ({_schedule(self.entry)})")
        rising = [_fold_name(c.folder) for c in self.curves if c.status == "rising"]
        short = [_fold_name(c.folder) for c in self.curves if c.status == "too short"]
        if rising:
            out.append(f"validation curve still rising at the end ({', '.join(rising)})")
        if short and b not in PIPELINE_CHECK_BUDGETS:
            out.append(f"validation curve too short to judge ({', '.join(short)})")
        return out


def _fold_name(folder: str) -> str:
    parts = folder.rstrip("/").split("/")
    if len(parts) >= 5 and parts[-5] == "mfns_seeds":  # mfns-compare --seeds: .../mfns_seeds/seed_k/Dataset/model/fold_f
        return f"{parts[-4]}/{parts[-1]}"
    return parts[-1] if parts else folder


def _schedule(entry: dict) -> str:
    ep, it = entry.get("epochs"), entry.get("iterations_per_epoch")
    if ep is None and it is None:
        return "schedule unknown"
    return f"{ep if ep is not None else '?'} epochs x {it if it is not None else '?'} iterations"


def read_budgets(provenance: dict | None, methods: list[str]) -> tuple[list[MethodBudget], bool]:
    """(one MethodBudget per reported method, whether provenance has a training section at all)."""
    training = (provenance or {}).get("training")
    known = isinstance(training, dict) and bool(training)
    out = []
    for m in methods:
        entry = training.get(m) if known and isinstance(training.get(m), dict) else None
        folders = (entry or {}).get("model_folders") or []
        if not isinstance(folders, list) or not all(isinstance(d, str) for d in folders):
            raise MfnsInputError(f"provenance['training'][{m!r}]['model_folders']: expected a list of folder paths, "
                                 f"got {folders!r:.80}")
        curves = [read_convergence(d) for d in folders]
        out.append(MethodBudget(m, entry, curves))
    return out, known


def warning_line(budgets: list[MethodBudget], known: bool) -> str | None:
    """The one-line warning for the report's first lines, or None when nothing calls for it."""
    if not known:
        return ("> **Training budget unknown** (no `training` entry in the provenance): this report cannot tell "
                "whether these numbers are accuracy results.")
    parts = [f"{b.method}: {'; '.join(b.reasons)}" for b in budgets if b.reasons]
    if not parts:
        return None
    return "> **Warning: these numbers are not accuracy results.** " + " | ".join(parts) + "."


def budget_markdown(budgets: list[MethodBudget], known: bool) -> list[str]:
    """The 'Training budget' section (a table per method, the validation curve per fold)."""
    from .stats import markdown_table
    L = ["## Training budget", ""]
    if not known:
        L += ["Unknown: the report was given no provenance with a `training` entry (mfns-compare writes one; with "
              "mfns-report pass `--provenance FILE` holding `{\"training\": {method: {trainer, configuration, budget, "
              "epochs, iterations_per_epoch, checkpoint, model_folders}}}`).", ""]
        return L
    rows = []
    for b in budgets:
        e = b.entry
        if e is None:
            rows.append([b.method, "unknown", "", "", "", "", "not in the provenance"])
            continue
        if e.get("non_learned"):  # a tuned detector (mfns-compare's Frangi / LocalContrast): nothing was trained
            rows.append([b.method, "none", "none", str(e.get("budget", "")), "no training", "none",
                         str(e["non_learned"])])
            continue
        curve = "; ".join(f"{_fold_name(c.folder)}: {c.describe()}" for c in b.curves) or "no model folders given"
        rows.append([b.method, str(e.get("trainer", "")), str(e.get("configuration", "")), str(e.get("budget", "")),
                     _schedule(e), str(e.get("checkpoint", "")), curve])
    L.append(markdown_table(["method", "trainer", "configuration", "budget", "epochs x iterations",
                             "checkpoint tested", "validation curve (per fold)"], rows))
    L += ["", budget_note([b.entry.get("budget") for b in budgets if b.entry]), ""]
    return L


def budget_note(budget_names: list[str]) -> str:
    """The paragraph under the budget table; names what each budget used in the report is."""
    text = ("Read from the model folders (`evaluation/convergence.py`): where training recorded a learning curve "
            "(`learning_curve.csv`, the `study` budget) the curve is our DSC on the fold's validation cases at each "
            "evaluation point; otherwise nnU-Net's per-epoch pseudo-Dice from its training_log_*.txt. A curve is "
            "*still rising* when the mean of its last quarter of points (at least 2) exceeds that of the quarter "
            "before by more than 0.02. nnU-Net picks checkpoint_best.pth on its EMA pseudo-Dice. Budgets `ci` and "
            "`demo` only check the pipeline.")
    for name in dict.fromkeys(budget_names):
        description = BUDGETS[name].description if name in BUDGETS else ""
        if description.startswith("annealed"):
            # issue 22: a flat curve under an annealed schedule says nothing about convergence
            text += (f" **Budget `{name}` is an {description}**: its learning rate is annealed to near zero over "
                     "the last curve points, so *flat* here means the schedule ended, not that the method converged; "
                     "these numbers compare methods at an equal, fixed budget"
                     + (" (the key is still `study` so that committed results reproduce)." if name == "study" else "."))
    return text
