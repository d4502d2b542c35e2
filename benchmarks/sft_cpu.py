"""The tiny default on CPU: wall time of init_model + sft, SFT steps/s, peak RSS, and defect-type
macro-F1 / accuracy from greedy answers to the test split's type questions, beside the
majority-class baseline on the same questions.

    python benchmarks/sft_cpu.py [--vqa data/vqa] [--vision models/vision|off] [--params params.yaml]
                                 [--set sft.max_steps=300 ...]

Runs the stages' own ``run`` functions with params.yaml's sections (``--set`` overrides a key), into
a temporary folder; prints a markdown table.
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

import yaml


def _override(sections: dict, assignments: list[str]) -> None:
    for a in assignments:
        key, value = a.split("=", 1)
        *path, last = key.split(".")
        d = sections
        for k in path:
            d = d.setdefault(k, {})
        d[last] = yaml.safe_load(value)


def majority_baseline(vqa: Path) -> dict[str, float]:
    """Answer every type question with the train split's most frequent type answer's classes."""
    import pandas as pd

    from wafersage.annotation.answer_parser import parse_primary
    from wafersage.annotation.categories import TYPE_CATEGORY
    from wafersage.evaluation.type_scoring import type_scores
    from wafersage.modeling.vqa_data import ANSWER, CATEGORY

    train = pd.read_parquet(vqa / "train.parquet")
    test = pd.read_parquet(vqa / "test.parquet")
    train, test = (d[d[CATEGORY] == TYPE_CATEGORY] for d in (train, test))
    top = train[ANSWER].map(parse_primary).value_counts().index[0]
    refs = (
        [" and ".join(v) if len(v) else "none" for v in test["labels"]]
        if "labels" in test
        else list(test[ANSWER])
    )
    return type_scores(refs, [top.replace("+", " and ")] * len(test))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vqa", type=Path, default=Path("data/vqa"))
    ap.add_argument("--vision", default="models/vision")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--set", action="append", default=[], dest="sets")
    args = ap.parse_args()
    os.environ.setdefault(
        "MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.gettempdir()}/wafersage-bench-mlflow.db"
    )

    from wafersage.params import load_section
    from wafersage.stages import init_model, sft

    sec = {s: load_section(s, args.params) for s in ("model", "init_model", "sft", "render")}
    if args.vision == "off":
        sec["init_model"]["vision_init"] = "off"
    _override(sec, args.sets)
    size = int(sec["render"].get("size", 96))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        t0 = time.perf_counter()
        init_model.run(
            sec["init_model"], sec["model"], args.vqa / "train.parquet", Path(args.vision), t / "base", size
        )
        t1 = time.perf_counter()
        m = sft.run(sec["sft"], t / "base", args.vqa, t / "sft", t / "metrics.json", t / "ck")
        t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = majority_baseline(args.vqa)
    print(f"# sft_cpu ({dt.date.today()}, {platform.machine()}, {os.cpu_count()} cores, shared)\n")
    print(f"overrides: {' '.join(args.sets) or 'none'}; vision init: {args.vision}; image {size}px\n")
    print(
        "| init_model s | sft s (train s) | steps | steps/s | peak RSS MiB | val loss | type F1 | type acc |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {t1 - t0:.1f} | {t2 - t1:.1f} ({m['train_wall_s']:.1f}) | {m['steps']} "
        f"| {m['steps'] / m['train_wall_s']:.2f} | {rss:.0f} | {m['val_loss']:.3f} "
        f"| {m['type_macro_f1']:.3f} | {m['type_accuracy']:.3f} |"
    )
    print(
        f"\nmajority-class baseline on the same questions: macro-F1 {base['type_macro_f1']:.3f}, "
        f"accuracy {base['type_accuracy']:.3f} (n={base['type_n']}); "
        f"VLM / baseline macro-F1 ratio {m['type_macro_f1'] / max(base['type_macro_f1'], 1e-9):.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
