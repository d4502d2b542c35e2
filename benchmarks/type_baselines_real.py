"""Defect-type baselines on REAL WM-811K val beside the VLM's answers, on the same maps: majority class,
nearest centroid and gradient-boosted trees (``wafersage.modeling.baselines``) on
``wafersage.wafers.features``, trained on the given train splits; macro-F1 and accuracy with
bootstrap CIs, and each VLM's paired
difference to the trees.

    .venv/bin/python benchmarks/type_baselines_real.py --train train_10_split.pkl.xz \\
        --answers reports/evaluate/real_val_answers.parquet [more answer files]

An answers file has ``wafer_id`` and ``answer`` (and ``model``: one VLM a model), as written by the
evaluate stage (``reports/evaluate/real_val_answers.parquet``) or ``benchmarks/vlm_real.py --answers``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wm811k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--train", nargs="+", default=["train_10_split.pkl.xz"])
    ap.add_argument("--answers", nargs="*", type=Path, default=[])
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not (args.data / "val_data.pkl.xz").exists():
        raise SystemExit(f"skipped: no WM-811K data under {args.data}")

    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from wafersage.annotation.answer_parser import parse_labels
    from wafersage.evaluation.stats import accuracy_metric, ci, macro_f1_metric, paired_diff
    from wafersage.modeling.baselines import tree_classifier
    from wafersage.stages.pretrain_vision import single_class
    from wafersage.wafers.features import geometric_features
    from wafersage.wafers.loaders import load
    from wafersage.wafers.taxonomy import CLASSES

    train = pd.concat([load("wm811k-processed", args.data / f) for f in args.train], ignore_index=True)
    val = load("wm811k-processed", args.data / "val_data.pkl.xz")
    val = val[val["labels"].map(len) > 0].reset_index(drop=True)
    y = single_class(train["labels"])
    ok = y >= 0
    x_tr, x_val = geometric_features(train).to_numpy()[ok], geometric_features(val).to_numpy()
    y = y[ok]
    preds: dict[str, list[set[str]]] = {
        "majority class": [{CLASSES[int(np.bincount(y).argmax())]}] * len(val),
        "nearest centroid (standardised features)": [
            {CLASSES[i]}
            for i in make_pipeline(StandardScaler(), NearestCentroid()).fit(x_tr, y).predict(x_val)
        ],
        "trees (HistGradientBoosting, features)": [
            {CLASSES[i]} for i in tree_classifier(0).fit(x_tr, y).predict(x_val)
        ],
    }
    order = val["wafer_id"].astype(str)
    for path in args.answers:
        df = pd.read_parquet(path)
        groups = df.groupby("model", sort=False) if "model" in df else [(path.stem, df)]
        for model, g in groups:
            g = g.set_index(g["wafer_id"].astype(str))
            missing = set(order) - set(g.index)
            if missing:
                raise SystemExit(
                    f"{path}: {len(missing)} val maps without an answer (e.g. {sorted(missing)[0]})"
                )
            preds[f"VLM {path.parent.name}/{path.stem}:{model}"] = [
                parse_labels(a) for a in g.loc[order, "answer"]
            ]

    truth = [set(v) for v in val["labels"]]
    n = len(truth)
    trees = macro_f1_metric(truth, preds["trees (HistGradientBoosting, features)"])
    rows = {}
    print(
        f"| method ({n:,} WM-811K val maps; train {', '.join(args.train)}) "
        "| macro-F1 [95% CI] | accuracy | minus trees [95% CI] |"
    )
    print("| --- | --- | ---: | --- |")
    for name, pr in preds.items():
        f = ci(macro_f1_metric(truth, pr), n, args.n_boot, 0)
        a = ci(accuracy_metric(truth, pr), n, args.n_boot, 0)
        d = paired_diff(macro_f1_metric(truth, pr), trees, n, args.n_boot, 0)
        rows[name] = {"macro_f1": f, "accuracy": a, "minus_trees": d}
        print(
            f"| {name} | {f['value']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}] | {a['value']:.3f} "
            f"| {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
