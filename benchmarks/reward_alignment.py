"""Alignment of the rule score with the judge: runs the judge and align stages' code on synthetic
wafers (independent draws per seed) and prints held-out Spearman/Kendall of the aligned score, of the
paper-default parameters and of BLEU/ROUGE alone, plus the dead-group rate, as a markdown table.

    .venv/bin/python benchmarks/reward_alignment.py [--seeds 0 1 2] [--wafers 80] [--pairs 300] [--trials 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _score_data import records_and_pairs  # noqa: E402

KEYS = (
    "spearman_heldout",
    "kendall_heldout",
    "spearman_paper_default",
    "spearman_bleu_rouge",
    "dead_group_rate",
)


def one(seed: int, wafers: int, pairs_n: int, trials: int, root: Path) -> dict[str, float]:
    from wafersage.stages import align, judge

    recs, pairs = records_and_pairs(wafers, seed=100 + seed)
    d = root / f"seed{seed}"
    (d / "vqa").mkdir(parents=True)
    pairs.to_parquet(d / "vqa" / "val.parquet")
    (d / "rubrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs.values()) + "\n")
    judge.run(
        {"n_pairs": pairs_n, "seed": seed},
        d / "vqa",
        d / "rubrics.jsonl",
        d / "pool.parquet",
        d / "scores.parquet",
        d / "judge.json",
    )
    t = time.perf_counter()
    res = align.run(
        {"seed": seed, "n_trials": trials, "dead_groups": 400, "throughput_batch": 1024},
        d / "pool.parquet",
        d / "scores.parquet",
        d / "rubrics.jsonl",
        d / "rc.json",
        d / "align.json",
        d / "scatter.csv",
    )
    res["align_s"] = time.perf_counter() - t
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--wafers", type=int, default=80)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--trials", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.chdir(tmp)
        runs = [one(s, args.wafers, args.pairs, args.trials, Path(tmp)) for s in args.seeds]
    print(
        f"{args.wafers} synthetic wafers/seed, {args.pairs} QA pairs x ~11 graded answers, "
        f"{args.trials} TPE trials, judge = reference, {time.strftime('%Y-%m-%d')}\n"
    )
    print("| seed | " + " | ".join(KEYS) + " | rule_scores_per_s (CPU) | align wall s |")
    print("|---|" + "---:|" * (len(KEYS) + 2))
    for s, r in zip(args.seeds, runs, strict=True):
        print(
            f"| {s} | "
            + " | ".join(f"{r[k]:.3f}" for k in KEYS)
            + f" | {r['rule_scores_per_s']:,.0f} | {r['align_s']:.0f} |"
        )
    med = {k: statistics.median(r[k] for r in runs) for k in (*KEYS, "rule_scores_per_s", "align_s")}
    print(
        "| **median** | "
        + " | ".join(f"**{med[k]:.3f}**" for k in KEYS)
        + f" | **{med['rule_scores_per_s']:,.0f}** | {med['align_s']:.0f} |"
    )


if __name__ == "__main__":
    main()
