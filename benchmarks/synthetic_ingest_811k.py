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

from wafersage.rawtable import read_raw
from wafersage.synthetic import SyntheticConfig, write_parquet_chunked


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=811_457)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/wafersage_syn811k.parquet")
    ap.add_argument("--keep", action="store_true", help="keep the Parquet file")
    args = ap.parse_args()
    cfg = SyntheticConfig(n_wafers=args.n, seed=args.seed)
    out = Path(args.out)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    write_parquet_chunked(cfg, out, chunk=args.chunk, timings=timings)
    t1 = time.perf_counter()
    rss_write = _peak_mib()
    df = read_raw(out)
    t2 = time.perf_counter()
    rss_read = _peak_mib()
    assert len(df) == args.n, (len(df), args.n)
    size_mib = out.stat().st_size / 2**20
    if not args.keep:
        os.remove(out)
    print("| phase | seconds | wafers/s | peak RSS MiB (after phase) |")
    print("|---|---|---|---|")
    gen, wr = timings["generate_s"], timings["write_s"]
    print(f"| generate ({args.n:,} maps, chunks of {args.chunk:,}) | {gen:.1f} | {args.n / gen:,.0f} | |")
    print(f"| check + Arrow + Parquet write (zstd, {size_mib:,.0f} MiB) | {wr:.1f} | {args.n / wr:,.0f} | |")
    print(
        f"| **ingest total** (generate + write) | **{t1 - t0:.1f}** | {args.n / (t1 - t0):,.0f} "
        f"| {rss_write:,.0f} |"
    )
    print(
        f"| read back (read_raw -> DataFrame) | {t2 - t1:.1f} | {args.n / (t2 - t1):,.0f} | {rss_read:,.0f} |"
    )
    print(f"| **total** | **{t2 - t0:.1f}** | | {rss_read:,.0f} |")
    print(f"\npython {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
