"""Hyperparameter sweeps on Optuna: a search space typed as ranges and choices, TPE sampling, pruning on
each validation, studies in memory or in a database the next sweep continues.

    run_sweep(train_trial, parse_space({"lr": "1e-4..1e-1:log"})[0], trials=10).best
"""
from .space import Param, parse_space, parse_value, sample
from .study import PRUNERS, Sweep, open_study, run_sweep

__all__ = ["PRUNERS", "Param", "Sweep", "open_study", "parse_space", "parse_value", "run_sweep", "sample"]
