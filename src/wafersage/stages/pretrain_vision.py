"""pretrain_vision: train the wafer vision encoder (the VLM's vision tower) on the raw maps.

Splits the raw table into train / held-out by primary label (seeded), pretrains on the train
part (noise-robust supervised + contrastive, see ``modeling.vision_train``), and scores the
frozen embeddings on the held-out part with a linear probe and k-NN (against the true labels
where the data carries them, e.g. synthetic). Writes ``models/vision/`` and the metrics JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.atomic import atomic_outputs
from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.modeling.tiny_config import vision_config
from wafersage.modeling.vision_encoder import encode_grids, multi_hot, save_encoder, table_maps
from wafersage.modeling.vision_inputs import MERGE_SIZE, resample_batch, visual_tokens
from wafersage.modeling.vision_train import check_trainable, probe_scores, train_encoder
from wafersage.tracking import stage_run
from wafersage.wafers import taxonomy
from wafersage.wafers.rawtable import read_raw
from wafersage.wafers.render import check_size
from wafersage.wafers.splits import wafer_splits


def single_class(labels: pd.Series) -> np.ndarray:
    """Class index of single-labelled rows, -1 for unlabelled and mixed rows."""
    return np.array([taxonomy.class_index()[v[0]] if len(v) == 1 else -1 for v in labels], dtype=np.int64)


def scoring_labels(df: pd.DataFrame) -> np.ndarray:
    """The labels held-out wafers are scored against: true labels where present, else given."""
    if "true_labels" not in df:
        return single_class(df["labels"])
    truth = [
        list(t) if t is not None and len(t) else list(g)
        for t, g in zip(df["true_labels"], df["labels"], strict=True)
    ]
    return single_class(pd.Series(truth, index=df.index, dtype=object))


def run(
    params: dict[str, Any],
    raw: Path,
    model_dir: Path,
    metrics: Path,
    image_size: int,
    tiny: dict[str, Any] | None = None,
    splits: Path | None = None,
) -> dict[str, Any]:
    """Pretrain the encoder on the train split's maps and labels, score its probes on the val
    split (test maps are never seen), save it; return the metrics."""
    p = validated("pretrain_vision", params)
    check_size(image_size)
    cfg = vision_config(tiny)
    unit = cfg.patch_size * MERGE_SIZE
    if cfg.spatial_merge_size != MERGE_SIZE or image_size % unit:
        raise WaferSageError("params.yaml", f"image size must be a multiple of {unit}", f"got {image_size}")
    df = read_raw(raw).reset_index(drop=True)
    split = wafer_splits(df, splits)
    used = np.isin(split, ("train", "val"))  # test maps are never read again
    df, split = df[used].reset_index(drop=True), split[used]
    train, held = split == "train", split == "val"
    targets_all = multi_hot([list(v) for v in df["labels"]])
    check_trainable(int(train.sum()), targets_all[train], p, raw)
    grids = resample_batch(table_maps(df), image_size)

    inputs = {"raw": raw, **({"splits": splits} if splits else {})}
    with stage_run("pretrain_vision", {**p, "image_size": image_size}, inputs=inputs) as mlflow:
        mlflow.log_params({"visual_tokens": visual_tokens(image_size), "n_train": int(train.sum())})

        def log(step: int, rec: dict[str, float]) -> None:
            if step % 10 == 0:
                mlflow.log_metrics({k: v for k, v in rec.items() if k != "wall_s"}, step=step)

        t0 = time.perf_counter()
        model, history = train_encoder(grids[train], targets_all[train], cfg, p, log)
        train_wall = time.perf_counter() - t0
        z_train, _ = encode_grids(model, grids[train], int(p["embed_batch_size"]))
        z_val, _ = encode_grids(model, grids[held], int(p["embed_batch_size"]))
        y_train, y_test = single_class(df.loc[train, "labels"]), scoring_labels(df.loc[held])
        tr, te = y_train >= 0, y_test >= 0
        k, seed = int(p["knn_k"]), int(p["seed"])
        scores = probe_scores(z_train[tr], y_train[tr], z_val[te], y_test[te], k, seed)
        n_params = sum(int(t.numel()) for t in model.visual.parameters())
        result = {
            **scores,
            "train_wall_s": round(train_wall, 2),
            "image_size": image_size,
            "visual_tokens": visual_tokens(image_size),
            "steps": len(history),
            "final_loss": round(history[-1]["loss"], 5),
            "first_loss": round(history[0]["loss"], 5),
            "n_train": int(train.sum()),
            "n_heldout_scored": int(te.sum()),
            "tower_params": n_params,
        }
        mlflow.log_metrics({k: float(v) for k, v in result.items() if isinstance(v, int | float)})
        with atomic_outputs((model_dir, True), (metrics, False)) as (tmp, tmp_metrics):
            tmp.mkdir(parents=True, exist_ok=True)
            save_encoder(model, tmp, image_size, {"steps": len(history), "n_train": int(train.sum())})
            tmp_metrics.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        mlflow.log_artifact(str(metrics))
    return result
