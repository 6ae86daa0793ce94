"""Synthetic 3T T2w perivascular-space (PVS) phantom cohort (issue 4).

`generate_cohort` writes an nnU-Net raw dataset with labels, rating-slice region masks, true counts and
two simulated raters; `simulate_subject` returns one subject in memory. See docs/phantom.md.
"""
from .acquisition import PROFILES, Profile, get_profile
from .cohort import SubjectSpec, generate_cohort, make_demographics, simulate_subject

__all__ = ["PROFILES", "Profile", "SubjectSpec", "generate_cohort", "get_profile", "make_demographics",
           "simulate_subject"]
