"""Two runs of the real-data pipeline on the same val maps, paired: each model's macro-F1 and exact
match in run A, A minus B where run B has that model, and within run A each VLM minus the trees and
the specialist; for multi-label data, exact match on the maps with four labels.

    .venv/bin/python benchmarks/compare_runs.py A/reports/evaluate/real_val_answers.parquet \\
        [B/reports/evaluate/real_val_answers.parquet] [--n-boot 1000] [--json out.json]

The files are the evaluate stage's ``real_val_answers.parquet`` (``model``, ``wafer_id``, ``truth``,
``pred``; labels joined with ``+``). Intervals are percentile bootstraps over the maps, the same
resamples for both sides of a difference (``wafersage.evaluation.stats.paired_diff``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from wafersage.evaluation import stats

VLMS = ("sft", "gspo")


def label_sets(column: pd.Series) -> list[set[str]]:
    """``Center+Loc`` -> ``{"Center", "Loc"}`` (an empty cell: no label)."""
    return [set(v.split("+")) if v else set() for v in column]


def load(path: Path) -> dict[str, pd.DataFrame]:
    """One table a model, indexed by wafer id."""
    return {m: g.set_index("wafer_id") for m, g in pd.read_parquet(path).groupby("model")}


def metrics(truth: list[set[str]], pred: list[set[str]]) -> dict[str, stats.Metric]:
    return {"macro_f1": stats.macro_f1_metric(truth, pred), "exact_match": stats.accuracy_metric(truth, pred)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path, nargs="?")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    a = load(args.a)
    b = load(args.b) if args.b else {}
    ids = a[VLMS[-1]].index
    truth = label_sets(a[VLMS[-1]].loc[ids, "truth"])
    n = len(ids)
    preds = {m: label_sets(t.loc[ids, "pred"]) for m, t in a.items()}
    run_a = {m: metrics(truth, p) for m, p in preds.items()}
    run_b = {m: metrics(truth, label_sets(t.loc[ids, "pred"])) for m, t in b.items() if m in a}
    out: dict[str, dict] = {"n": {"maps": n}}
    for m, ms in run_a.items():
        out[m] = {k: stats.rounded(stats.ci(f, n, args.n_boot, args.seed)) for k, f in ms.items()}
        if m in run_b:
            out[f"{m}_a_minus_b"] = {
                k: stats.rounded(stats.paired_diff(f, run_b[m][k], n, args.n_boot, args.seed))
                for k, f in ms.items()
            }
    for vlm in (v for v in VLMS if v in run_a):
        for other in (o for o in ("trees", "specialist") if o in run_a):
            out[f"{vlm}_vs_{other}"] = {
                k: stats.rounded(stats.paired_diff(f, run_a[other][k], n, args.n_boot, args.seed))
                for k, f in run_a[vlm].items()
            }
    four = [i for i, t in enumerate(truth) if len(t) == 4]
    if four:
        out["four_label_exact_match"] = {
            m: round(float(np.mean([p[i] == truth[i] for i in four])), 4) for m, p in preds.items()
        } | {"maps": len(four)}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
