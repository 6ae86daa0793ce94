"""Evaluation of PVS segmentations (installed as `nnunetv2_mfns.evaluation`).

Modules: `metrics` (DSC/SEN/PPV, lesion-wise detection, volumes, HD95; folder evaluation), `counts`
(rating-slice counts, Spearman, Bland-Altman), `stats` (Table-2 summary), `fold_stats` (paired
comparisons with a reference at the level of folds, Holm), `figures` (Figs. 3-6 and Bland-Altman), `failure_cases` (Fig. 7, worst cases), `report`
(`build_report`) with `report_text` (report.md) and `budget` (training budget and warning, from provenance and
`convergence`, the nnU-Net training-log reader), `io` (input checks, fold membership), `lesion_matching`
(one-to-one lesion matching). Other modules here belong to other parts (rating slices, census). The FAKE result sets of the tests, the benchmark and the
example report are test fixtures: tests/synthetic_results.py (not installed). Console scripts:
`mfns-evaluate`, `mfns-counts`, `mfns-report`. Nothing is imported here, so importing the package stays cheap.
"""
