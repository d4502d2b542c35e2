"""The specialist with its trees on the die-level map against today's specialist (trees on the map as
the VLM sees it), on real WM-811K, outside the pipeline.

One CNN (``wafersage.modeling.specialist.fit``, the ``specialist`` params; image and feature input:
each map rendered at ``--size`` and decoded back, as today) is trained on the train maps less a
stratified held-out slice (``--holdout``, a share of the *training* maps; never val). Two trees
members are fitted on the same rows: today's, on the geometric features of the render-decoded map,
and one on the geometric features of the die-level canonical map. Each blend is scored on every map
of ``val_data.pkl.xz`` at the fit's default weight (0.5) and at the weight ``choose_blend`` picks
on the held-out slice, with bootstrap CIs and paired differences; the die-level trees baseline
alone (``real_val.trees_answers``, fitted on all train maps) is scored beside them.

``--cnn-die-features`` adds a second CNN whose geometric-feature input (and so its trees member) is
the die-level map's, per rotation/flip view in training; its image input is unchanged.

    .venv/bin/python benchmarks/specialist_die.py --train train_29_split.pkl.xz --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from specialist_real import DATA, labelled, seen

from wafersage.config import validated
from wafersage.evaluation import real_val, stats
from wafersage.modeling.baselines import fit_trees
from wafersage.modeling.specialist import (
    VIEWS,
    Specialist,
    _fit_rows,
    _planes,
    _prepare,
    _trees_proba,
    _view_features,
    blended,
    decide,
    fit,
    pick_blend,
)
from wafersage.wafers.features import geometric_features
from wafersage.wafers.loaders import load
from wafersage.wafers.rawtable import decode_map


def die_features(maps: pd.DataFrame) -> np.ndarray:
    """Geometric features of the die-level maps (NaN as 0, as the specialist's own features)."""
    return np.nan_to_num(geometric_features(maps).to_numpy(np.float32))


def die_view_features(maps: pd.DataFrame) -> np.ndarray:
    """(8 views, n, features): the geometric features of each rotation/flip of the die-level maps,
    as the specialist's training measures them (``VIEWS``, ``_view_features``)."""
    dies = [decode_map(b, r, c) for b, r, c in zip(maps["map"], maps["rows"], maps["cols"], strict=True)]
    return np.stack([_view_features(dies, dies, k, flip) for k, flip in VIEWS])


def members_on_features(
    model: Specialist, maps: np.ndarray, raw: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(CNN, trees) probabilities with ``raw`` as the feature input (one view, as ``tta: false``)."""
    import torch

    c = model.config
    assert not c.tta and not c.multi_label and model.trees is not None
    mean, std = np.asarray(c.feature_mean, np.float32), np.asarray(c.feature_std, np.float32)
    cnn = []
    with torch.inference_mode():
        for s in range(0, len(maps), 512):
            f = torch.from_numpy((raw[s : s + 512] - mean) / std)
            cnn.append(torch.softmax(model.net(_planes(maps[s : s + 512]), f), 1).double().numpy())
    return np.concatenate(cnn), _trees_proba(model.trees, raw, len(c.classes))


def answer(labels: set[str]) -> str:
    return " and ".join(sorted(labels)) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--train", nargs="+", default=["train_29_split.pkl.xz"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=int(validated("specialist")["epochs"]))
    ap.add_argument("--holdout", type=float, default=0.1, help="share of train maps that choose the blend")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--cnn-die-features", action="store_true", help="also a CNN fed die-level features")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    load_start = os.getloadavg()
    t_start = time.perf_counter()

    train = labelled(
        pd.concat([load("wm811k-processed", args.data / f) for f in args.train], ignore_index=True)
    )
    val = labelled(load("wm811k-processed", args.data / "val_data.pkl.xz"))
    labels = [sorted(v) for v in train["labels"]]
    everything = np.arange(len(train))
    if args.holdout > 0:
        from sklearn.model_selection import train_test_split

        rows, held = train_test_split(
            everything, test_size=args.holdout, stratify=[v[0] for v in labels], random_state=0
        )
        rows, held = np.sort(rows), np.sort(held)
    else:
        rows, held = everything, everything[:0]
    train_seen, val_seen = seen(train, args.size), seen(val, args.size)
    p = {**validated("specialist"), "epochs": args.epochs, "size": args.size}

    t0 = time.perf_counter()
    model = fit(train_seen[rows], [labels[i] for i in rows], p)
    fit_s = time.perf_counter() - t0
    names, multi = model.config.classes, model.config.multi_label
    y = np.array([[c in labels[i] for c in names] for i in rows], dtype=int)
    die_trees = fit_trees(die_features(train.iloc[rows]), y if multi else y.argmax(1), int(p["seed"]))

    def members(maps: np.ndarray, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cnn, render_trees = model.members(list(maps))
        assert render_trees is not None
        return cnn, render_trees, _trees_proba(die_trees, die_features(table), len(names))

    cnn, render_trees, die = members(val_seen, val)
    weights: dict[str, float] = {"render": 0.5, "die": 0.5}
    by_weight: dict[str, dict[str, float]] = {}
    if len(held):
        h_cnn, h_render, h_die = members(train_seen[held], train.iloc[held])
        held_labels = [labels[i] for i in held]
        for name, h_trees in (("render", h_render), ("die", h_die)):
            weights[f"{name}_chosen"], by_weight[name] = pick_blend(h_cnn, h_trees, held_labels, names, multi)

    members_of = {"render": render_trees, "die": die}
    cnn_die_fit_s = None
    if args.cnn_die_features:
        d = _prepare(train_seen, labels, args.size)
        d.feats = die_view_features(train)
        t0 = time.perf_counter()
        model_d = _fit_rows(d, rows, p)
        cnn_die_fit_s = time.perf_counter() - t0
        assert model_d.config.classes == names
        cnn_d, trees_d = members_on_features(model_d, val_seen, die_features(val))
        weights["cnn_die"] = 0.5
        if len(held):
            h_cnn_d, h_trees_d = members_on_features(
                model_d, train_seen[held], die_features(train.iloc[held])
            )
            weights["cnn_die_chosen"], by_weight["cnn_die"] = pick_blend(
                h_cnn_d, h_trees_d, [labels[i] for i in held], names, multi
            )
        members_of["cnn"] = trees_d
    preds = {
        f"specialist_{k}_w{w}": decide(
            blended(cnn_d if k.startswith("cnn") else cnn, members_of[k.split("_")[0]], w), names, multi
        )
        for k, w in weights.items()
    }
    if args.cnn_die_features:
        preds["cnn_die_features_alone"] = decide(cnn_d, names, multi)
    preds["cnn_alone"] = decide(cnn, names, multi)
    preds["trees_render_fit_rows"] = decide(render_trees, names, multi)
    preds["trees_die_fit_rows"] = decide(die, names, multi)
    answers = {k: [answer(s) for s in v] for k, v in preds.items()}
    answers["trees_die_level"] = real_val.trees_answers(train, val, seed=0)

    sp = {"n_boot": args.n_boot, "seed": 0, "confidence": 0.95}
    metrics, detail = real_val.score_models(val, answers, sp)
    truth = [set(v) for v in val["labels"]]
    from wafersage.annotation.answer_parser import parse_labels

    f1 = {k: stats.macro_f1_metric(truth, [parse_labels(a) for a in v]) for k, v in answers.items()}

    def diff(a: str, b: str) -> dict[str, float | None]:
        return stats.rounded(stats.paired_diff(f1[a], f1[b], len(truth), args.n_boot))

    s = {k: f"specialist_{k}_w{w}" for k, w in weights.items()}
    pairs = {"die_minus_render_at_0.5": (s["die"], s["render"])}
    if len(held):
        pairs |= {
            "die_minus_render_chosen": (s["die_chosen"], s["render_chosen"]),
            "die_chosen_minus_trees_die_level": (s["die_chosen"], "trees_die_level"),
            "render_chosen_minus_trees_die_level": (s["render_chosen"], "trees_die_level"),
        }
    if args.cnn_die_features:
        pairs["cnn_die_minus_render_at_0.5"] = (s["cnn_die"], s["render"])
        pairs["cnn_die_minus_die_at_0.5"] = (s["cnn_die"], s["die"])
        if len(held):
            pairs["cnn_die_minus_render_chosen"] = (s["cnn_die_chosen"], s["render_chosen"])
    pairs |= {
        "die_at_0.5_minus_trees_die_level": (s["die"], "trees_die_level"),
        "render_at_0.5_minus_trees_die_level": (s["render"], "trees_die_level"),
    }
    out = {
        "train": args.train,
        "n_train": len(train),
        "n_fit": len(rows),
        "n_held_out": len(held),
        "n_val": len(val),
        "epochs": args.epochs,
        "specialist_fit_s": round(fit_s, 1),
        "cnn_die_features_fit_s": None if cnn_die_fit_s is None else round(cnn_die_fit_s, 1),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "blend_weights": weights,
        "held_out_macro_f1_by_weight": by_weight,
        "macro_f1": {
            k: {"value": metrics[k]["type_macro_f1"], **metrics[k]["ci"]["type_macro_f1"]} for k in answers
        },
        "paired": {name: diff(a, b) for name, (a, b) in pairs.items()},
        "per_class": {k: {c: v["f1"] for c, v in detail[k]["per_class"].items()} for k in answers},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
