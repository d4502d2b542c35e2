"""Cost of featurising and cleaning N synthetic maps: wall time per phase and peak RSS.

    .venv/bin/python benchmarks/clean_scale.py --n 10000 50000

Each N runs in a fresh process so peak RSS is its own. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(n: int, params: str) -> dict:
    from wafersage.cleaning import CleanConfig, clean_labels
    from wafersage.features import geometric_features
    from wafersage.params import load_section
    from wafersage.synthetic import SyntheticConfig, generate

    cfg = CleanConfig.from_dict(load_section("clean", params))
    t0 = time.perf_counter()
    df = generate(SyntheticConfig(n_wafers=n, seed=3))
    t1 = time.perf_counter()
    x = geometric_features(df).to_numpy()
    t2 = time.perf_counter()
    clean_labels(x, df["labels"], cfg)
    t3 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {"n": n, "generate_s": t1 - t0, "features_s": t2 - t1, "clean_s": t3 - t2, "peak_rss_gb": rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[10000, 50000])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--one", type=int, default=None)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(a.one, a.params)))
        return
    print("| N | generate s | features s | clean s | features+clean s | peak RSS GB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in a.n:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--params", a.params],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {n:,} | {r['generate_s']:.1f} | {r['features_s']:.1f} | {r['clean_s']:.1f} | "
            f"{r['features_s'] + r['clean_s']:.1f} | {r['peak_rss_gb']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
