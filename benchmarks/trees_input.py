"""The trees baseline on the specialist's input against the trees on die-level maps (real WM-811K).

Both fit :func:`wafersage.modeling.baselines.fit_trees` on the geometric features of the same train maps and
labels and answer every map of ``val_data.pkl.xz``: once on the die-level maps (what
``real_val.trees`` uses), once on each map as the VLM and the specialist see it (rendered at
``--size`` and decoded back). The gap is what the render costs a feature model.

    .venv/bin/python benchmarks/trees_input.py --train train_29_split.pkl.xz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from specialist_real import DATA, labelled, seen

from wafersage.annotation.answer_parser import parse_labels
from wafersage.evaluation import real_val, stats
from wafersage.modeling.baselines import fit_trees
from wafersage.modeling.specialist import _features  # the specialist's own feature table
from wafersage.wafers.loaders import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--train", nargs="+", default=["train_29_split.pkl.xz"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()

    train = labelled(
        pd.concat([load("wm811k-processed", args.data / f) for f in args.train], ignore_index=True)
    )
    val = labelled(load("wm811k-processed", args.data / "val_data.pkl.xz"))
    y = [sorted(v)[0] for v in train["labels"]]
    rendered = fit_trees(_features(seen(train, args.size)), y).predict(_features(seen(val, args.size)))
    answers = {
        "trees_die_level": real_val.trees_answers(train, val, seed=0),
        f"trees_{args.size}px": [f"{c}." for c in rendered],
    }
    metrics, _ = real_val.score_models(val, answers, {"n_boot": args.n_boot, "seed": 0, "confidence": 0.95})
    out = {
        "train": args.train,
        "n_train": len(train),
        "n_val": len(val),
        **{k: metrics[k]["type_macro_f1"] for k in answers},
        **{f"{k}_ci": metrics[k]["ci"]["type_macro_f1"] for k in answers},
    }
    truth = [set(v) for v in val["labels"]]
    f1 = {k: stats.macro_f1_metric(truth, [parse_labels(a) for a in v]) for k, v in answers.items()}
    out["rendered_minus_die_level"] = stats.rounded(
        stats.paired_diff(f1[f"trees_{args.size}px"], f1["trees_die_level"], len(truth), args.n_boot)
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
