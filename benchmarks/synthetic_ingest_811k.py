"""WM-811K-scale synthetic ingest: generate 811,457 maps, write them to Parquet in row-group
chunks (``synthetic.write_parquet_chunked``), read them back with ``rawtable.read_raw``.

    python benchmarks/synthetic_ingest_811k.py [--n 811457] [--chunk 50000] [--out /tmp/syn811k.parquet]

Reports wall time per phase, total, file size and peak RSS after each phase (``ru_maxrss`` is a
high-water mark: the read-back phase holds the whole table as a DataFrame).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

from wafersage.wafers.rawtable import read_raw
from wafersage.wafers.synthetic import SyntheticConfig, write_parquet_chunked


def _peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=811_457)
    ap.add_argument("--chunk", type=int, default=25_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--baseline-n", type=int, default=50_000, help="wafers for the 1-worker vs N ratio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/wafersage_syn811k.parquet")
    ap.add_argument("--keep", action="store_true", help="keep the Parquet file")
    args = ap.parse_args()
    out = Path(args.out)
    print("| run | wafers | workers | seconds | wafers/s |")
    print("|---|---|---|---|---|")
    small = SyntheticConfig(n_wafers=args.baseline_n, seed=args.seed)
    rate = {}
    for w in (1, args.workers):
        t = {}
        write_parquet_chunked(small, out, chunk=args.chunk, workers=w, timings=t)
        rate[w] = args.baseline_n / t["total_s"]
        print(f"| baseline ratio run | {args.baseline_n:,} | {w} | {t['total_s']:.1f} | {rate[w]:,.0f} |")
    t: dict[str, float] = {}
    cfg = SyntheticConfig(n_wafers=args.n, seed=args.seed)
    write_parquet_chunked(cfg, out, chunk=args.chunk, workers=args.workers, timings=t)
    rss_children = _peak_mib(resource.RUSAGE_CHILDREN)
    t1 = time.perf_counter()
    df = read_raw(out)
    read_s = time.perf_counter() - t1
    assert len(df) == args.n, (len(df), args.n)
    size_mib = out.stat().st_size / 2**20
    if not args.keep:
        os.remove(out)
    ingest = t["total_s"]
    print(
        f"| **ingest: generate + check + write** ({size_mib:,.0f} MiB zstd) | {args.n:,} | {args.workers} "
        f"| **{ingest:.1f}** | {args.n / ingest:,.0f} |"
    )
    print(f"| read back (read_raw -> DataFrame) | {args.n:,} | 1 | {read_s:.1f} | {args.n / read_s:,.0f} |")
    print(f"\nspeed-up {args.workers} workers vs 1: {rate[args.workers] / rate[1]:.2f}x; writer waited")
    print(f"{t['wait_s']:.1f} s for chunks; peak RSS: writer {_peak_mib():,.0f} MiB (after read-back),")
    print(f"largest worker {rss_children:,.0f} MiB")
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
