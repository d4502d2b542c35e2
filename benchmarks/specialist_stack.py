"""A stacked specialist against a pipeline run's blended one, on every real WM-811K val map.

The specialist stage mixes its two members (the CNN and the trees) with one weight that the VQA val
split chooses. Here a multinomial logistic regression on both members' log-probabilities takes
that weight's place: it is fitted on the run's out-of-fold table (``data/specialist/oof.parquet``:
each training map's probabilities from members that never saw it), its regularisation chosen by
5-fold cross-validated log-loss on that table, so no val or test label chooses anything. It is
then applied to the run's shipped members and scored on the same real val maps as the shipped
blend: macro-F1 with bootstrap CIs, the paired difference, per-class F1. The VQA val split's
figures are printed beside them (1,803 maps, four Donut maps: a noisy selection split).

    .venv/bin/python benchmarks/specialist_stack.py --run <workspace> [--json out.json]

``--run`` is a single-label workspace whose real-data pipeline has run (``data/vqa``,
``data/specialist/oof.parquet``, ``models/specialist``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from wafersage.annotation.grounding import image_to_map
from wafersage.evaluation import real_val, stats
from wafersage.modeling.specialist import Specialist, blended, decide
from wafersage.modeling.vqa_data import read_split
from wafersage.stages.specialist import wafer_maps
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.render import render_map

VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wm811k" / "val_data.pkl.xz"
#: The regularisation strengths the cross-validation chooses among.
CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def log_members(cnn: np.ndarray, trees: np.ndarray) -> np.ndarray:
    """The stacker's inputs: both members' log-probabilities side by side."""
    return np.log(np.clip(np.concatenate([cnn, trees], axis=1), 1e-6, 1.0))


def main() -> None:
    from sklearn.linear_model import LogisticRegressionCV

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a workspace whose real-data pipeline ran")
    ap.add_argument("--val", type=Path, default=VAL)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    shipped = Specialist.load(a.run / "models/specialist")
    names = shipped.config.classes
    oof = pd.read_parquet(a.run / "data/specialist/oof.parquet")
    ids, _, _, train_labels = wafer_maps(read_split(a.run / "data/vqa/train.parquet"), Path("train"))
    label_of = dict(zip(ids, train_labels, strict=True))
    y = np.array([names.index(label_of[str(w)][0]) for w in oof["wafer_id"]])
    cnn_oof, trees_oof = (oof[[f"{m}:{c}" for c in names]].to_numpy() for m in ("cnn", "trees"))
    x = log_members(cnn_oof, trees_oof)
    stacker = LogisticRegressionCV(Cs=list(CS), cv=5, scoring="neg_log_loss", max_iter=3000).fit(x, y)

    real = real_val.load_maps(real_val.RealVal("wm811k-processed", a.val), None, 0)
    die_maps = [decode_map(b, r, c) for b, r, c in zip(real["map"], real["rows"], real["cols"], strict=True)]
    pictures = [image_to_map(render_map(m, shipped.config.size)) for m in die_maps]
    _, vqa_maps, vqa_dies, vqa_labels = wafer_maps(read_split(a.run / "data/vqa/val.parquet"), Path("val"))
    out: dict[str, object] = {
        "run": str(a.run),
        "n_oof": len(y),
        "chosen_C": float(stacker.C_[0]),
        "shipped_trees_weight": shipped.config.blend,
    }
    for split, maps, dies, labels in (
        ("real_val", pictures, die_maps, real["labels"]),
        ("vqa_val", list(vqa_maps), vqa_dies, vqa_labels),
    ):
        cnn, trees = shipped.members(maps, dies)
        truth = [set(v) for v in labels]
        preds = {
            "shipped": decide(blended(cnn, trees, shipped.config.blend), names, False),
            "stacked": decide(stacker.predict_proba(log_members(cnn, trees)), names, False),
        }
        f1 = {k: stats.macro_f1_metric(truth, v) for k, v in preds.items()}
        n = len(truth)
        out[split] = {
            "n": n,
            **{k: stats.rounded(stats.ci(m, n, a.n_boot, 0)) for k, m in f1.items()},
            "stacked_minus_shipped": stats.rounded(
                stats.paired_diff(f1["stacked"], f1["shipped"], n, a.n_boot, 0)
            ),
            "per_class": {k: stats.per_class_f1(truth, v) for k, v in preds.items()},
        }
    print(json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
