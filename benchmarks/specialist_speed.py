"""The specialist's CNN on the CPU: inference with the network's own forward against the shipped
one (batch norm folded into each convolution, channels-last planes), on the same real val maps in
one run, with the probabilities and grounding clauses compared; and training steps in the default
memory layout against channels-last, from the same initial weights on the same batch.

    .venv/bin/python benchmarks/specialist_speed.py --specialist <run>/models/specialist \
        --val ../shared/data/wm811k/val_data.pkl.xz [--n 2048] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wafersage.evaluation import real_val
from wafersage.modeling.specialist import Specialist, _net, _planes, clauses_of


def median_s(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def training_steps(spec: Specialist, maps: list[np.ndarray], steps: int, channels_last: bool) -> float:
    """Median seconds of one AdamW step on a batch of 128 maps (and random features)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    c = spec.config
    net = _net(len(c.feature_mean), len(c.classes), c.width)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = _planes(np.stack(maps[:128])).contiguous(memory_format=fmt)
    f = torch.randn(len(x), len(c.feature_mean))
    y = torch.randint(0, len(c.classes), (len(x),))
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = F.cross_entropy(net(x, f), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specialist", type=Path, required=True, help="a specialist folder")
    ap.add_argument("--val", type=Path, required=True, help="WM-811K processed val pickle")
    ap.add_argument("--n", type=int, default=2048, help="val maps (seeded sample)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    table = real_val.load_maps(real_val.RealVal("wm811k-processed", args.val), args.n, 0)
    spec = Specialist.load(args.specialist)
    seen, dies = real_val.specialist_inputs(table, spec.config.size)
    shipped = spec._forward
    ways = {"network forward": spec.net, "folded, channels-last": shipped}
    probs, secs = {}, {}
    for name, forward in ways.items():
        spec._forward = forward
        probs[name], _ = spec.members(seen, dies)
        secs[name] = median_s(lambda: spec.members(seen, dies), args.repeats)
    spec._forward = shipped
    ref, new = probs.values()
    clauses = [clauses_of(p, spec.config.classes, spec.config.multi_label) for p in (ref, new)]
    differ = sum(a != b for a, b in zip(*clauses, strict=True))
    print(f"torch threads {torch.get_num_threads()}, {len(seen)} real val maps, {args.repeats} repeats")
    print("| CNN forward | ms a map (CNN + features + trees) |\n|---|---:|")
    for name, s in secs.items():
        print(f"| {name} | {1e3 * s / len(seen):.2f} |")
    print(
        f"ratio {secs['network forward'] / secs['folded, channels-last']:.2f}x; max |p difference| "
        f"{np.abs(ref - new).max():.1e}; clauses that differ: {differ} of {len(seen)}"
    )
    plain, last = (training_steps(spec, seen, args.train_steps, cl) for cl in (False, True))
    print(
        f"training step (batch 128): default layout {1e3 * plain:.0f} ms, channels-last "
        f"{1e3 * last:.0f} ms, ratio {plain / last:.2f}x"
    )


if __name__ == "__main__":
    main()
