"""Evaluation of PVS segmentations (installed as `nnunetv2_mfns.evaluation`).

Modules: `metrics` (DSC/SEN/PPV, lesion-wise detection, volumes, HD95; folder evaluation), `counts`
(rating-slice counts, Spearman, Bland-Altman), `stats` (Table-2 summary, Wilcoxon + bootstrap CI vs a
reference method), `figures` (Figs. 3-6 and Bland-Altman), `report` (`build_report`), `io` (input checks),
`lesion_matching` (one-to-one lesion matching). The FAKE result sets of the tests, the benchmark and the
example report are test fixtures: tests/synthetic_results.py (not installed). Console scripts:
`mfns-evaluate`, `mfns-counts`, `mfns-report`. Nothing is imported here, so importing the package stays cheap.
"""
