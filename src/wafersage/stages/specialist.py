"""specialist: train the defect-type specialist on the VQA train split's wafers.

Each wafer's image (as the VLM sees it) is decoded back to off/pass/fail pixels, its die-level map
read from the image (:func:`wafersage.wafers.render.embedded_map`), and the specialist
(:mod:`wafersage.modeling.specialist`) learns the wafer's labels from the two; only the train split is
used, so val and test labels never reach it. The members are combined by a stacker fitted on
the train wafers' out-of-fold probabilities (``combine: stack``) or with the trees' weight that the
VQA val split's wafers (the selection split) choose (``combine: blend``); that split scores it.
Writes ``models/specialist/`` (what ``init_model`` ships inside the model folder), the
out-of-fold probabilities of the train wafers (``specialist.folds`` folds; what SFT and GSPO ground
their training prompts with) and the metrics JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.annotation.grounding import image_to_map
from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.evaluation import stats
from wafersage.modeling.specialist import choose_blend, fit, fit_out_of_fold, oof_table
from wafersage.modeling.vqa_data import IMAGE, LABELS, WAFER, pil_image, read_split
from wafersage.tracking import stage_run
from wafersage.wafers.render import embedded_map
from wafersage.wafers.taxonomy import NONE


def wafer_maps(
    split: pd.DataFrame, path: Path
) -> tuple[list[str], np.ndarray, list[np.ndarray | None], list[list[str]]]:
    """The wafer ids, one decoded map, the die-level map its image carries (``None``: none) and one
    label list per wafer of a VQA split (wafers without labels: ``none``)."""
    if LABELS not in split.columns:
        raise WaferSageError(path, "VQA split lacks columns", LABELS)
    first = split.drop_duplicates(WAFER)
    images = [pil_image(v) for v in first[IMAGE]]
    maps = np.stack([image_to_map(im) for im in images])
    dies = [embedded_map(im, path) for im in images]
    labels = [[c for c in v if c != NONE] or [NONE] for v in first[LABELS].map(list)]
    return [str(w) for w in first[WAFER]], maps, dies, labels


def run(params: dict[str, Any], vqa_dir: Path, out: Path, metrics: Path, oof: Path) -> dict[str, Any]:
    """Train on the train split, combine the members (stacked or blended on the val split) and score
    on the val split; save the specialist, the
    out-of-fold table of the train wafers (empty with ``folds: 0``) and the metrics."""
    p = validated("specialist", params)
    paths = {s: Path(vqa_dir) / f"{s}.parquet" for s in ("train", "val")}
    train_ids, train_maps, train_dies, train_labels = wafer_maps(read_split(paths["train"]), paths["train"])
    _, val_maps, val_dies, val_labels = wafer_maps(read_split(paths["val"]), paths["val"])
    sizes = {m.shape for m in (train_maps[0], val_maps[0])}
    if len(sizes) != 1 or train_maps.shape[1] != train_maps.shape[2]:
        raise WaferSageError(vqa_dir, "VQA images must share one square size", str(sorted(sizes)))
    with stage_run("specialist", p, inputs={f"vqa_{s}": v for s, v in paths.items()}) as mlflow:
        fp, folds = {**p, "size": int(train_maps.shape[1])}, int(p["folds"])
        t0 = time.perf_counter()
        if folds:
            model, members = fit_out_of_fold(train_maps, train_labels, fp, folds, train_dies)
            table = oof_table(train_ids, list(train_maps), model.config.classes, members)
        else:
            model = fit(train_maps, train_labels, fp, train_dies)
            table = oof_table([], [], model.config.classes, {"cnn": np.zeros((0, len(model.config.classes)))})
        fit_wall = time.perf_counter() - t0
        stack = model.config.stack
        blends = {} if stack else choose_blend(model, list(val_maps), val_labels, val_dies)
        truth = [set(v) for v in val_labels]
        pred = model.predict(list(val_maps), val_dies)
        f1 = stats.rounded(stats.ci(stats.macro_f1_metric(truth, pred), len(truth), 1000, int(p["seed"])))
        result = {
            "n_train": len(train_maps),
            "n_val": len(val_maps),
            "classes": len(model.config.classes),
            "multi_label": model.config.multi_label,
            "train_wall_s": round(fit_wall, 2),
            "steps": model.config.trained["steps"],
            "val_type_macro_f1": f1["value"],
            "val_type_macro_f1_ci": {"low": f1["ci_low"], "high": f1["ci_high"]},
            "val_per_class": stats.per_class_f1(truth, pred),
            "combine": "stack" if stack else "blend",
            **(
                {"stack_C": stack["C"]}
                if stack
                else {"trees_weight": model.config.blend, "val_type_macro_f1_by_trees_weight": blends}
            ),
            "oof_folds": folds,
        }
        mlflow.log_metrics(
            {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        )
        with atomic_outputs((out, True), (oof, False), (metrics, False)) as (t_out, t_oof, t_metrics):
            model.save(t_out)
            table.to_parquet(t_oof, index=False)
            t_metrics.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        mlflow.log_artifact(str(metrics))
    return result
