"""The specialist's two ways of combining its members, on every real WM-811K val map.

``specialist.combine: blend`` mixes the CNN and the trees with the one weight that the VQA val split
scores best; ``stack`` feeds both members' log-probabilities to a logistic regression fitted on the
run's out-of-fold table (``data/specialist/oof.parquet``: each training map's probabilities from
members that never saw it), its regularisation chosen by cross-validated log-loss on that table
(:func:`wafersage.modeling.specialist.fit_stack`). Both are built here from a run's shipped members,
whichever the run shipped, and scored on the same real val maps: macro-F1 with bootstrap CIs, the
paired difference, per-class F1. The VQA val split's figures are printed beside them (1,803 maps,
four Donut maps: a noisy selection split).

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

from wafersage.evaluation import real_val, stats
from wafersage.modeling.specialist import Specialist, blended, decide, fit_stack, pick_blend, stacked
from wafersage.modeling.vqa_data import read_split
from wafersage.stages.specialist import wafer_maps

VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wm811k" / "val_data.pkl.xz"


def main() -> None:
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
    y = np.eye(len(names))[[names.index(label_of[str(w)][0]) for w in oof["wafer_id"]]]
    cnn_oof, trees_oof = (oof[[f"{m}:{c}" for c in names]].to_numpy() for m in ("cnn", "trees"))
    stack, _ = fit_stack(cnn_oof, trees_oof, y, names, False, 0)

    real = real_val.load_maps(real_val.RealVal("wm811k-processed", a.val), None, 0)
    pictures, die_maps = real_val.specialist_inputs(real, shipped.config.size)
    _, vqa_maps, vqa_dies, vqa_labels = wafer_maps(read_split(a.run / "data/vqa/val.parquet"), Path("val"))
    vqa_cnn, vqa_trees = shipped.members(list(vqa_maps), vqa_dies)
    weight, _ = pick_blend(vqa_cnn, vqa_trees, vqa_labels, names, False)
    out: dict[str, object] = {
        "run": str(a.run),
        "shipped_combine": "stack" if shipped.config.stack else "blend",
        "n_oof": len(y),
        "chosen_C": stack["C"][0],
        "vqa_val_trees_weight": weight,
    }
    for split, maps, dies, labels in (
        ("real_val", pictures, die_maps, real["labels"]),
        ("vqa_val", list(vqa_maps), vqa_dies, vqa_labels),
    ):
        cnn, trees = shipped.members(maps, dies)
        truth = [set(v) for v in labels]
        preds = {
            "blend": decide(blended(cnn, trees, weight), names, False),
            "stack": decide(stacked(stack, cnn, trees, False), names, False),
        }
        f1 = {k: stats.macro_f1_metric(truth, v) for k, v in preds.items()}
        n = len(truth)
        out[split] = {
            "n": n,
            **{k: stats.rounded(stats.ci(m, n, a.n_boot, 0)) for k, m in f1.items()},
            "stack_minus_blend": stats.rounded(stats.paired_diff(f1["stack"], f1["blend"], n, a.n_boot, 0)),
            "per_class": {k: stats.per_class_f1(truth, v) for k, v in preds.items()},
        }
    print(json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
