"""The specialist against the trees on real WM-811K, outside the pipeline (same code, same maps).

Trains the pipeline's specialist (``wafersage.modeling.specialist.fit``) on the maps of the given
train splits as the VLM sees them (rendered at ``--size`` and decoded back), and the trees baseline
(``wafersage.evaluation.real_val.trees_answers``: gradient-boosted trees on the die-level geometric
features) on the same maps and labels, and scores both on every map of ``val_data.pkl.xz``, with
bootstrap CIs and the paired difference.

    .venv/bin/python benchmarks/specialist_real.py --train train_29_split.pkl.xz --epochs 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from wafersage.annotation.answer_parser import parse_labels
from wafersage.annotation.grounding import image_to_map
from wafersage.config import validated
from wafersage.evaluation import real_val, stats
from wafersage.modeling.specialist import fit
from wafersage.wafers.loaders import load
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import render_map

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wm811k"


def seen(maps: pd.DataFrame, size: int) -> np.ndarray:
    """Each map as the VLM sees it: rendered at ``size`` and decoded back to off/pass/fail."""
    cells = zip(maps["map"], maps["rows"], maps["cols"], strict=True)
    return np.stack([image_to_map(render_map(decode_map(b, r, c), size)) for b, r, c in cells])


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a label."""
    return df[df["labels"].map(len) > 0].reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--train", nargs="+", default=["train_29_split.pkl.xz"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=int(validated("specialist")["epochs"]))
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    train = labelled(
        pd.concat([load("wm811k-processed", args.data / f) for f in args.train], ignore_index=True)
    )
    val = labelled(load("wm811k-processed", args.data / "val_data.pkl.xz"))
    t0 = time.perf_counter()
    model = fit(
        seen(train, args.size),
        list(train["labels"]),
        {**validated("specialist"), "epochs": args.epochs, "size": args.size},
    )
    fit_s = time.perf_counter() - t0
    answers = {
        "specialist": [" and ".join(sorted(s)) + "." for s in model.predict(list(seen(val, args.size)))],
        "trees": real_val.trees_answers(train, val, seed=0),
    }
    p = {"n_boot": args.n_boot, "seed": 0, "confidence": 0.95}
    metrics, detail = real_val.score_models(val, answers, p)
    truth = [set(v) for v in val["labels"]]
    f1 = {k: stats.macro_f1_metric(truth, [parse_labels(a) for a in v]) for k, v in answers.items()}
    diff = stats.rounded(stats.paired_diff(f1["specialist"], f1["trees"], len(truth), args.n_boot))
    out = {
        "train": args.train,
        "n_train": len(train),
        "n_val": len(val),
        "specialist_fit_s": round(fit_s, 1),
        **{k: metrics[k] for k in answers},
        "specialist_minus_trees": diff,
        "per_class": {k: detail[k]["per_class"] for k in answers},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
