"""Evaluation and error analysis on the core's scores: metrics by task, the confusion matrix, the top
losses with their inputs, calibration, and samples from a language model.

    evaluate(model, load_dataset("digits"), "test").top_losses(5)
"""
from .report import Evaluation, evaluate, reliability

__all__ = ["Evaluation", "evaluate", "reliability"]
