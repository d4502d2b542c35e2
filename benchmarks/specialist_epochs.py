"""A longer-trained (or wider) specialist against a pipeline run's own, on every real WM-811K val map.

Refits the specialist as the pipeline's `specialist` stage does (the run's VQA train split, the
die-level maps its images carry, the trees' weight chosen on its VQA val split), with ``--epochs``
(and ``--width``, when given) in place of the run's, and scores it and the run's shipped
specialist on the same real val maps: macro-F1 with bootstrap CIs, the paired difference, the
refit CNN alone, per-class F1.

    .venv/bin/python benchmarks/specialist_epochs.py --run . --epochs 20 [--width 24] \\
        [--val ../shared/data/wm811k/val_data.pkl.xz] [--json out.json]

``--run`` is a workspace whose real-data pipeline has run (``data/vqa``, ``models/specialist``,
``params.yaml``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from wafersage.evaluation import real_val, stats
from wafersage.modeling.specialist import Specialist, choose_blend, decide, fit
from wafersage.modeling.vqa_data import read_split
from wafersage.params import load_section
from wafersage.stages.specialist import wafer_maps

VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wm811k" / "val_data.pkl.xz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a workspace whose real-data pipeline ran")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--width", type=int, help="channels of the first conv block (default: the run's)")
    ap.add_argument("--val", type=Path, default=VAL)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    shipped = Specialist.load(a.run / "models/specialist")
    run_p = load_section("specialist", a.run / "params.yaml")
    p = {**run_p, "epochs": a.epochs, "width": a.width or run_p["width"]}
    _, maps, dies, labels = wafer_maps(read_split(a.run / "data/vqa/train.parquet"), Path("train"))
    _, val_maps, val_dies, val_labels = wafer_maps(read_split(a.run / "data/vqa/val.parquet"), Path("val"))
    t0 = time.perf_counter()
    model = fit(maps, labels, {**p, "size": int(maps.shape[1])}, dies)
    fit_s = time.perf_counter() - t0
    blends = choose_blend(model, list(val_maps), val_labels, val_dies)

    real = real_val.load_maps(real_val.RealVal("wm811k-processed", a.val), None, 0)
    pictures, die_maps = real_val.specialist_inputs(real, shipped.config.size)
    truth = [set(v) for v in real["labels"]]
    cnn, _ = model.members(pictures, die_maps)
    preds = {
        "shipped": shipped.predict(pictures, die_maps),
        "refit": model.predict(pictures, die_maps),
        "refit_cnn_alone": decide(cnn, model.config.classes, model.config.multi_label),
    }
    f1 = {k: stats.macro_f1_metric(truth, v) for k, v in preds.items()}
    n = len(truth)
    out = {
        "run": str(a.run),
        "epochs": {"shipped": run_p["epochs"], "refit": a.epochs},
        "width": {"shipped": run_p["width"], "refit": p["width"]},
        "refit_fit_s": round(fit_s, 1),
        "refit_trees_weight": model.config.blend,
        "refit_vqa_val_by_trees_weight": blends,
        "n_val": n,
        **{k: stats.rounded(stats.ci(m, n, a.n_boot, 0)) for k, m in f1.items()},
        "refit_minus_shipped": stats.rounded(stats.paired_diff(f1["refit"], f1["shipped"], n, a.n_boot, 0)),
        "per_class": {k: stats.per_class_f1(truth, v) for k, v in preds.items() if k != "refit_cnn_alone"},
    }
    print(json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
