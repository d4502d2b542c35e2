"""Evaluation of answers: bootstrap statistics, per-model scoring and the HTML report."""
