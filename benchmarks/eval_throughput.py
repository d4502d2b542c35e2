"""Evaluation throughput of the tiny default on CPU: answers/s of batched greedy generation (the
evaluate stage's path) vs one question at a time (baseline ratio in the same run).

    .venv/bin/python benchmarks/eval_throughput.py [--model models/sft] [--n 64] [--batch 32] [--tokens 40]

Without ``--model`` an untrained tiny model (default architecture, 96-px images) is built in a temp
folder; an untrained model never stops early, so each answer runs the full ``--tokens``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--baseline-n", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import torch

    from wafersage.serving.predictor import Predictor
    from wafersage.wafers.rawtable import decode_map
    from wafersage.wafers.render import render_map
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    if a.model is None:
        from tiny_model import build_tiny_model

        a.model = build_tiny_model(Path(tempfile.mkdtemp(prefix="eval_tp_")) / "tiny", size=96)
    pred = Predictor(a.model, batch_size=a.batch, max_new_tokens=a.tokens)
    raw = generate(SyntheticConfig.from_dict({"n_wafers": a.n, "seed": 0}))
    images = [render_map(decode_map(r.map, r.rows, r.cols), pred.image_size) for r in raw.itertuples()]
    qs = ["What type of defect pattern is visible on this wafer map?"] * a.n

    def rate(n: int, bs: int) -> float:
        pred.batch_size = bs
        t = time.perf_counter()
        pred.answer(images[:n], qs[:n])
        return n / (time.perf_counter() - t)

    batched = sorted(rate(a.n, a.batch) for _ in range(a.repeats))
    single = sorted(rate(a.baseline_n, 1) for _ in range(a.repeats))
    med_b, med_s = batched[len(batched) // 2], single[len(single) // 2]
    print(f"torch threads: {torch.get_num_threads()}, model: {a.model}, image {pred.image_size}px")
    print(f"| mode | answers | max new tokens | answers/s (median of {a.repeats}) | runs |")
    print("|---|---|---|---|---|")
    runs_b, runs_s = ", ".join(f"{x:.2f}" for x in batched), ", ".join(f"{x:.2f}" for x in single)
    print(f"| batched (batch {a.batch}) | {a.n} | {a.tokens} | {med_b:.2f} | {runs_b} |")
    print(f"| one at a time (baseline) | {a.baseline_n} | {a.tokens} | {med_s:.2f} | {runs_s} |")
    print(f"\nbatched / one-at-a-time: {med_b / med_s:.1f}x")


if __name__ == "__main__":
    main()
