"""README "Results" and the study folder's README are generated from the committed study CSVs
(benchmarks/readme_results.py): a hand-edited number, or a CSV changed without regenerating, fails here."""
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmark_modules import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def readme_results():
    return load_benchmark("readme_results")


def test_readme_results_match_the_committed_csvs(readme_results, capsys):
    assert readme_results.main(["--check"]) == 0, capsys.readouterr().err
    readme = (ROOT / "README.md").read_text()
    results = readme[readme.index("## Results"):]
    assert "annealed 500-iteration budget" in results
    # issue 22's example: on the 8 subjects of 3d_fullres, MfNS_De's PPV (0.751) is below 3d_fullres's (0.762);
    # MfNS_De's 20-subject PPV (0.783) must not stand beside that row
    row = next(line for line in results.splitlines() if line.startswith("| stock nnU-Net 3d_fullres (8, folds 0-1)"))
    assert "0.762 (0.751)" in row and "0.762 (0.783)" not in row


def copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    study = root / "docs" / "results" / "study_head_to_head"
    study.mkdir(parents=True)
    shutil.copy(ROOT / "README.md", root / "README.md")
    for f in ("README.md", "stats.csv", "summary.csv", "counts.csv", "metrics.csv", "provenance.json"):
        shutil.copy(ROOT / "docs" / "results" / "study_head_to_head" / f, study / f)
    return root


def test_a_hand_edited_number_or_a_changed_csv_is_caught(readme_results, tmp_path, capsys):
    root = copy_tree(tmp_path)
    readme = root / "README.md"
    text = readme.read_text()
    assert "0.762 (0.751)" in text
    readme.write_text(text.replace("0.762 (0.751)", "0.762 (0.715)", 1))   # a planted hand edit
    assert readme_results.main(["--check", "--root", str(root)]) == 1
    assert "README.md" in capsys.readouterr().err
    assert readme_results.main(["--root", str(root)]) == 0                 # regenerating repairs it
    assert readme.read_text() == text
    stats = root / "docs" / "results" / "study_head_to_head" / "stats.csv"
    table = pd.read_csv(stats)
    table.loc[(table["method"] == "nnUNet_3d") & (table["metric"] == "ppv"), "mean_reference"] -= 0.01
    table.to_csv(stats, index=False)                                       # a CSV changed, README not rerun
    assert readme_results.main(["--check", "--root", str(root)]) == 1


def test_committed_study_statistics_are_what_restat_gives(tmp_path):
    """docs/results/study_head_to_head's stats.csv, summary.md and report.md are reproduced byte for byte by
    `study_report.py --restat` from the committed metrics.csv (and a second run changes nothing)."""
    study_report = load_benchmark("study_report")
    committed = ROOT / "docs" / "results" / "study_head_to_head"
    out = tmp_path / "study_head_to_head"
    shutil.copytree(committed, out, ignore=shutil.ignore_patterns("*.png"))
    (out / "stats.csv").unlink()
    assert study_report.restat(out) == 0
    for f in ("stats.csv", "summary.md"):
        assert (out / f).read_bytes() == (committed / f).read_bytes(), f
    # report.md names the folder it was recomputed in; apart from that line it is the committed one
    assert (out / "report.md").read_text().replace(str(out), "docs/results/study_head_to_head") == \
        (committed / "report.md").read_text()
