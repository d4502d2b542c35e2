"""Ingest throughput: load every file of ../shared/data through ``loaders.load`` (restricted
unpickler, per-wafer checks) and write one raw Parquet table per source with ``rawtable.write_raw``.

    python benchmarks/ingest_throughput.py [--data ../shared/data] [--out /tmp/wafersage-ingest]

Prints a markdown table: per phase wall time, maps, maps/s; then peak RSS of the process. Each file
is also unpickled once on its own (``safe_load``) to split decompress+unpickle from the checks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from wafersage.wafers.loaders import load
from wafersage.wafers.rawtable import write_raw
from wafersage.wafers.safe_pickle import safe_load

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JOBS = (("wm811k-processed", "wm811k"), ("mixedwm38-processed", "mixedwm38"))


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("WAFERSAGE_SHARED_DATA", DEFAULT_DATA)))
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: a temp folder)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="wafersage-ingest-"))
    rows: list[tuple[str, int, float]] = []
    t_all = time.perf_counter()
    n_all = 0
    for source, sub in JOBS:
        tables = []
        for f in sorted((args.data / sub).glob("*.pkl*")):
            t = time.perf_counter()
            obj = safe_load(f)
            t_unpickle = time.perf_counter() - t
            t = time.perf_counter()
            tables.append(load(source, f))
            sec = time.perf_counter() - t
            n = len(tables[-1])
            rows.append((f"unpickle only {sub}/{f.name}", n, t_unpickle))
            rows.append((f"load {sub}/{f.name} (unpickle + check + table)", n, sec))
            del obj
        t = time.perf_counter()
        df = pd.concat(tables, ignore_index=True)
        del tables
        write_raw(df, out / f"{source}.parquet")
        size = (out / f"{source}.parquet").stat().st_size / 2**20
        rows.append(
            (f"concat + write_raw {source}.parquet ({size:.1f} MiB)", len(df), time.perf_counter() - t)
        )
        n_all += len(df)
        del df
    total = time.perf_counter() - t_all
    print(
        f"- date: {dt.date.today().isoformat()}; python {platform.python_version()}, pandas {pd.__version__}"
    )
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"- command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print("| phase | maps | wall s | maps/s |")
    print("| --- | ---: | ---: | ---: |")
    for phase, n, sec in rows:
        print(f"| {phase} | {n:,} | {sec:.2f} | {n / sec:,.0f} |")
    print(
        f"\nTotal: {n_all:,} maps in {total:.1f} s wall ({n_all / total:,.0f} maps/s, includes the extra "
        f"unpickle-only pass); "
        f"peak RSS {peak_rss_mb():,.0f} MiB; output in {out}"
    )


if __name__ == "__main__":
    main()
