"""A reproducible small-scale study of search quality on a real dataset (scikit-learn's bundled digits).

Three questions, each answered by training architectures from scratch on the same fixed split:

1. :mod:`.proxy_study`: do training-free proxies (TF-TAS's DSS, the zero-cost proxies) rank architectures of a
   tiny AutoFormer space better than their parameter count does?
2. :mod:`.supernet_study`: on a supernet trained with uniform sampling, does AutoFormer's evolution find better
   architectures than random search with the same number of evaluations?
3. :mod:`.darts_study`: does a short first-order DARTS search beat random cells of the same size?

One call regenerates everything (``python bench/search_quality/study.py --out DIR``; ``--smoke`` for the tiny CI
preset), or from Python with ``bench/search_quality`` on ``sys.path``::

    from digits_study import run_study
    results = run_study('runs/study', seed=0)      # results.json, report.md, *.png in runs/study

Needs the ``study`` extra (scikit-learn, matplotlib). :mod:`.data` exposes the digits as a timm-compatible
dataset and writes them as an ImageFolder for the search commands.
"""
from .config import STUDY_SPACE, DartsStudyConfig, ProxyStudyConfig, StudyConfig, SupernetStudyConfig
from .data import DigitsData, DigitsDataset, load_digits_data, write_image_folder
from .report import render_markdown, write_report
from .runner import RESULTS_FILE, environment, run_study
from .training import TrainBudget, derive_seed, train_model

__all__ = [
    "STUDY_SPACE",
    "StudyConfig",
    "ProxyStudyConfig",
    "SupernetStudyConfig",
    "DartsStudyConfig",
    "TrainBudget",
    "DigitsData",
    "DigitsDataset",
    "load_digits_data",
    "write_image_folder",
    "run_study",
    "environment",
    "render_markdown",
    "write_report",
    "derive_seed",
    "train_model",
    "RESULTS_FILE",
]
