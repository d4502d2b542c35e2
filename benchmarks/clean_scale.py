"""Cost of the clean stage's work on N synthetic maps: wall time and peak RSS per phase.

    .venv/bin/python benchmarks/clean_scale.py --n 10000 50000 811457

For each N the raw table is first generated to Parquet in its own process (the pipeline's input;
``--raw-dir`` keeps the files for a rerun), then a fresh process does what the clean stage does:
read the columns it needs (``read_raw``), featurise, clean. Peak RSS is that process's high-water
mark after each phase, so generating the table is not in it. The generator's 10% structured label
noise is known, so it also prints flipped-label detection F1 against cleanlab's. Prints a markdown
table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def generate(n: int, path: Path, workers: int) -> float:
    from wafersage.wafers.synthetic import SyntheticConfig, write_parquet_chunked

    t = time.perf_counter()
    write_parquet_chunked(SyntheticConfig(n_wafers=n, seed=3), path, chunk=25_000, workers=workers)
    return time.perf_counter() - t


def clean(path: Path, params: str) -> dict:
    from wafersage.labels.cleaning import CleanConfig, clean_labels, cleanlab_flags, detection_scores
    from wafersage.params import load_section
    from wafersage.stages.clean import READ_COLUMNS
    from wafersage.wafers.features import geometric_features
    from wafersage.wafers.rawtable import read_raw

    cfg = CleanConfig.from_dict(load_section("clean", params))
    out: dict[str, float] = {"start_rss_gb": _peak_gb()}
    t0 = time.perf_counter()
    df = read_raw(path, columns=READ_COLUMNS)
    t1 = time.perf_counter()
    out["read_rss_gb"] = _peak_gb()
    x = geometric_features(df).to_numpy()
    t2 = time.perf_counter()
    out["features_rss_gb"] = _peak_gb()
    res = clean_labels(x, df["labels"], cfg)
    t3 = time.perf_counter()
    out.update(
        n=len(df),
        read_s=t1 - t0,
        features_s=t2 - t1,
        clean_s=t3 - t2,
        peak_rss_gb=_peak_gb(),
        kept=float((res.verdict == "keep").mean()),
    )
    truth = df["noise_flipped"].to_numpy(bool)
    out["f1"] = detection_scores(res.verdict != "keep", truth)["f1"]
    out["cleanlab_f1"] = detection_scores(cleanlab_flags(res), truth)["f1"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[10000, 50000])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw-dir", type=Path, default=Path("/tmp/wafersage_clean_scale"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--generate", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--clean", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.generate is not None:
        print(
            json.dumps(
                {"generate_s": generate(a.generate, a.raw_dir / f"raw_{a.generate}.parquet", a.workers)}
            )
        )
        return
    if a.clean is not None:
        print(json.dumps(clean(a.clean, a.params)))
        return
    a.raw_dir.mkdir(parents=True, exist_ok=True)
    print(
        "| N | generate s | read s | features s | clean s | read+features+clean s "
        "| RSS after read / features / clean GB | detection F1 (cleanlab) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in a.n:
        raw = a.raw_dir / f"raw_{n}.parquet"
        gen = "(kept)"
        if not raw.exists():
            cmd = [sys.executable, __file__, "--generate", str(n), "--raw-dir", str(a.raw_dir)]
            cmd += ["--workers", str(a.workers)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            gen = f"{json.loads(out.stdout.strip().splitlines()[-1])['generate_s']:.1f}"
        cmd = [sys.executable, __file__, "--clean", str(raw), "--params", a.params]
        r = json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )
        total = r["read_s"] + r["features_s"] + r["clean_s"]
        print(
            f"| {n:,} | {gen} | {r['read_s']:.1f} | {r['features_s']:.1f} | {r['clean_s']:.1f} | {total:.1f} "
            f"| {r['read_rss_gb']:.2f} / {r['features_rss_gb']:.2f} / {r['peak_rss_gb']:.2f} "
            f"| {r['f1']:.3f} ({r['cleanlab_f1']:.3f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
