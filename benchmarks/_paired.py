"""Shared by the benchmarks that answer the same real maps two ways: macro-F1 of each way's answers
with a bootstrap CI, the paired difference of each pair of ways and how many answers differ, printed
and written as JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from wafersage.annotation.answer_parser import parse_labels
from wafersage.evaluation import stats


def report(
    args: argparse.Namespace,
    answers: dict[str, list[str]],
    truth: Sequence[set[str]],
    pairs: dict[str, tuple[str, str]],
    wall: dict[str, float],
    diff_name: str,
) -> None:
    """Print (and write to ``args.json``) the ``macro_f1`` of every way in ``answers`` and, for
    each ``name: (a, b)`` of ``pairs`` whose ways both answered, the paired ``a - b`` on the same
    maps (under ``diff_name``) and ``answers_differ``; ``args``: ``model, n_boot, seed, json``."""
    n_boot, seed = args.n_boot, args.seed
    f1 = {k: stats.macro_f1_metric(list(truth), [parse_labels(a) for a in v]) for k, v in answers.items()}
    n = len(truth)
    present = {name: ab for name, ab in pairs.items() if all(w in answers for w in ab)}
    out = {
        "model": str(args.model),
        "n": n,
        "wall_s": wall,
        "macro_f1": {k: stats.rounded(stats.ci(m, n, n_boot, seed)) for k, m in f1.items()},
        diff_name: {
            name: stats.rounded(stats.paired_diff(f1[a], f1[b], n, n_boot, seed))
            for name, (a, b) in present.items()
        },
        "answers_differ": {
            name: int(sum(x != y for x, y in zip(answers[a], answers[b], strict=True)))
            for name, (a, b) in present.items()
        },
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
