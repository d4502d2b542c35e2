"""Synthetic generator throughput (wafers/s, one process) and peak RSS.

python benchmarks/synthetic_throughput.py [--n 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time

import numpy as np

from wafersage.wafers.synthetic import SyntheticConfig, generate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = SyntheticConfig(n_wafers=args.n, seed=args.seed)
    t0 = time.perf_counter()
    df = generate(cfg)
    dt = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    dies = float(np.mean(df["rows"].to_numpy() * df["cols"].to_numpy()))
    print("| n wafers | mean grid dies | seconds | wafers/s | peak RSS MiB | python | machine |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {len(df)} | {dies:.0f} | {dt:.1f} | {len(df) / dt:,.0f} | {peak_mib:,.0f} "
        f"| {platform.python_version()} | {platform.machine()} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
