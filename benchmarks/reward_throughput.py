"""Rule-score throughput: scored answers per second for one batch (default 1,024) of calibration
answers, single-threaded, reference caches cleared before each repeat. Reports CPU-time rates (per
core, robust to other jobs) and wall-clock rates, medians of ``--repeats``, for the paper-default
config (the baseline), the hardened config and ``models/reward/reward_config.json`` when present.

    .venv/bin/python benchmarks/reward_throughput.py [--batch 1024] [--repeats 5] [--embedding]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _score_data import records_and_pairs  # noqa: E402

from wafersage.annotation.knowledge import load_knowledge_base  # noqa: E402
from wafersage.score import config as cfgmod  # noqa: E402
from wafersage.score.calibration import build_pool  # noqa: E402
from wafersage.score.config import HARDENED, PAPER_DEFAULT  # noqa: E402
from wafersage.score.rules import Item, _reference_view, score_items  # noqa: E402
from wafersage.score.textmetrics import embedding_cosine  # noqa: E402


def rates(fn, n: int, repeats: int) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(repeats):
        _reference_view.cache_clear()
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(n / max(time.process_time() - c, 1e-9))
        wall.append(n / (time.perf_counter() - w))
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--wafers", type=int, default=120)
    ap.add_argument("--embedding", action="store_true", help="also time the MiniLM cosine")
    args = ap.parse_args()
    recs, pairs = records_and_pairs(args.wafers, seed=7)
    pool = build_pool(pairs, recs, load_knowledge_base(), n_pairs=400, seed=0)
    rng = np.random.default_rng(0)
    rows = pool.iloc[rng.integers(0, len(pool), size=args.batch)]
    items = [
        Item(r.question, r.answer, r.reference, recs[r.wafer_id]["rubric"], recs[r.wafer_id]["labels"])
        for r in rows.itertuples()
    ]
    configs = {"paper default (baseline)": PAPER_DEFAULT, "hardened": HARDENED}
    aligned = Path("models/reward/reward_config.json")
    if aligned.exists():
        configs["aligned (reward_config.json)"] = cfgmod.load(aligned)
    print(
        f"batch {args.batch}, {len(pool)} pool answers, {args.repeats} repeats, {time.strftime('%Y-%m-%d')}\n"
    )
    print("| config | answers/s (CPU time, 1 core) | answers/s (wall) | ratio vs baseline (CPU) |")
    print("|---|---:|---:|---:|")
    base = None
    for name, c in configs.items():
        cpu, wall = rates(lambda c=c: score_items(items, c), len(items), args.repeats)
        base = base or cpu
        print(f"| {name} | {cpu:,.0f} | {wall:,.0f} | {cpu / base:.2f} |")
    if args.embedding:
        answers, refs = [i.answer for i in items], [i.reference for i in items]
        embedding_cosine(answers[:8], refs[:8])  # load the model once
        cpu, wall = rates(lambda: embedding_cosine(answers, refs), len(items), 1)
        print(f"| MiniLM cosine only | {cpu:,.0f} | {wall:,.0f} | {cpu / base:.2f} |")


if __name__ == "__main__":
    main()
