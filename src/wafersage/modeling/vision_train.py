"""Pretraining the wafer vision encoder, and scoring its embeddings (linear probe, k-NN).

Objective per step, on two random D4 views (plus a little die speckle) of each map in a batch:
``supervised_weight * GCE(noisy labels) + ssl_weight * NT-Xent(view 1, view 2)``; the
contrastive term needs no labels, so unlabelled maps help too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from wafersage.config import validated
from wafersage.errors import WaferSageError
from wafersage.modeling.vision_encoder import batch_inputs, build_encoder, gce_loss, nt_xent
from wafersage.progress import progress
from wafersage.wafers.encoding import FAIL, OFF, PASS


def speckle(grids: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Flip a fraction ``rate`` of on-wafer pixels between pass and fail (background noise)."""
    if rate <= 0:
        return grids
    hit = (rng.random(grids.shape) < rate) & (grids != OFF)
    out = grids.copy()
    out[hit] = np.where(grids[hit] == FAIL, PASS, FAIL)
    return out


def sampling_weights(targets: np.ndarray, power: float) -> np.ndarray | None:
    """Per-row draw probabilities ``1 / count(same label set) ** power`` (None when power is 0)."""
    if power <= 0:
        return None
    _, inverse, counts = np.unique(targets, axis=0, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse.ravel()].astype(np.float64) ** power
    return w / w.sum()


def check_trainable(n: int, targets: np.ndarray, p: dict[str, Any], file: Any) -> None:
    """Refuse inputs the objective cannot learn from, with one line (``p``: validated params,
    whose loss weights are >= 0 and not both 0)."""
    if n == 0:
        raise WaferSageError(file, "no wafers to pretrain the vision encoder on")
    if p["ssl_weight"] == 0 and not targets.any():
        raise WaferSageError(
            file, "all wafers are unlabelled but pretrain_vision.ssl_weight is 0", "nothing to learn from"
        )
    if p["ssl_weight"] > 0 and n < 2:
        raise WaferSageError(file, "the contrastive objective needs at least 2 wafers", f"got {n}")


def train_encoder(
    grids: np.ndarray,
    targets: np.ndarray,
    vision_config: Any,
    params: dict[str, Any],
    log: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Train an encoder on resampled grids (N, S, S) with multi-hot targets (N, 9); returns the
    model and one record a step (loss, supervised, ssl, lr, wall_s). ``balance_power`` > 0 draws
    batches with weights ``1 / count(label set) ** power`` (for imbalanced data such as WM-811K)."""
    import torch

    p = validated("pretrain_vision", params)
    check_trainable(len(grids), targets, p, None)
    torch.set_num_threads(int(p["threads"]))
    seed = int(p["seed"])
    model = build_encoder(vision_config, seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))
    steps, warm = int(p["max_steps"]), max(1, int(p["warmup_steps"]))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = np.random.default_rng(seed)
    n, bs = len(grids), min(int(p["batch_size"]), len(grids))
    order, pos = rng.permutation(n), 0
    weights = sampling_weights(targets, float(p["balance_power"]))
    y_all = torch.from_numpy(targets.astype(np.float32))
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step in progress(range(steps), "pretrain vision", unit="step"):
        if weights is not None:
            idx = np.sort(rng.choice(n, bs, replace=False, p=weights))
        else:
            if pos + bs > n:
                order, pos = rng.permutation(n), 0
            idx = np.sort(order[pos : pos + bs])
            pos += bs
        g = grids[idx]
        views = [speckle(g, float(p["speckle"]), rng) for _ in range(2)]
        ks, fs = rng.integers(0, 4, (2, bs)), rng.integers(0, 2, (2, bs)).astype(bool)
        pix, grid = batch_inputs(np.concatenate(views), np.concatenate(ks), np.concatenate(fs))
        _, logits, proj = model(pix, grid)
        y = y_all[idx]
        q = float(p["gce_q"])
        sup = 0.5 * (gce_loss(logits[:bs], y, q) + gce_loss(logits[bs:], y, q))
        ssl = nt_xent(proj[:bs], proj[bs:], float(p["ssl_temperature"])) if p["ssl_weight"] > 0 else sup * 0
        loss = float(p["supervised_weight"]) * sup + float(p["ssl_weight"]) * ssl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        rec = {
            "loss": float(loss.detach()),
            "supervised": float(sup.detach()),
            "ssl": float(ssl.detach()),
            "lr": float(opt.param_groups[0]["lr"]),
            "wall_s": time.perf_counter() - t0,
        }
        history.append(rec)
        if log is not None:
            log(step, rec)
        if rec["wall_s"] > float(p["max_train_s"]):
            break
    return model.eval(), history


def probe_scores(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_test: np.ndarray,
    y_test: np.ndarray,
    k: int = 10,
    seed: int = 0,
) -> dict[str, float | None]:
    """Macro-F1 on the test rows of a logistic-regression probe and a cosine k-NN, both fitted
    on frozen train embeddings (class indices; classes absent from the test rows are not scored)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(y_test) == 0 or len(np.unique(y_train)) < 2:
        return {"linear_probe_macro_f1": None, "knn_macro_f1": None}
    labels = np.unique(y_test)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    probe.fit(z_train, y_train)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(y_train)), metric="cosine", weights="distance")
    knn.fit(z_train, y_train)
    score = {}
    for name, clf in (("linear_probe_macro_f1", probe), ("knn_macro_f1", knn)):
        pred = clf.predict(z_test)
        score[name] = float(f1_score(y_test, pred, labels=labels, average="macro", zero_division=0))
    return score
