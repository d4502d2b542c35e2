"""The wafer vision encoder on REAL WM-811K: linear-probe and k-NN macro-F1 on the full val split.

Pretrains the encoder (the stage's own code: ``modeling.vision_train.train_encoder``, the VLM's
vision-tower architecture from ``model.tiny``) on WM-811K train maps with their (noisy) labels,
embeds train and val with the frozen tower, and scores over the 9 classes on val_data.pkl.xz.
Baseline in the same run: gradient-boosted trees (``wafersage.modeling.baselines``) on
``wafersage.wafers.features`` geometric features, same train maps, same val maps. Prints a markdown
table (and JSON with --json).

    .venv/bin/python benchmarks/vision_probe.py --budget-s 300          # ~10 CPU minutes
    .venv/bin/python benchmarks/vision_probe.py --budget-s 60 --max-train 3000 --max-val 2000  # smoke
    .venv/bin/python benchmarks/vision_probe.py --encoder DIR --size 64   # score a saved encoder
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from wafersage.modeling.tiny_config import vision_config
from wafersage.modeling.vision_encoder import encode_grids, multi_hot, table_maps
from wafersage.modeling.vision_inputs import resample_batch, visual_tokens
from wafersage.modeling.vision_train import probe_scores, train_encoder
from wafersage.stages.pretrain_vision import single_class
from wafersage.wafers.loaders import load
from wafersage.wafers.taxonomy import CLASSES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wm811k"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stratified_head(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, keeping every class's share (seeded)."""
    if n is None or n >= len(df):
        return df.reset_index(drop=True)
    return df.sample(n=n, random_state=seed).reset_index(drop=True)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--train", nargs="+", default=["train_20_split.pkl.xz"])
    ap.add_argument("--max-train", type=int, default=None, help="subsample the train maps (seeded)")
    ap.add_argument("--max-val", type=int, default=None, help="subsample val (default: the full split)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="pretraining wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--balance-power", type=float, default=0.5)
    ap.add_argument("--views", type=int, choices=(1, 8), default=1, help="D4 views averaged when embedding")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--baseline-only", action="store_true", help="score the trees only (no encoder)")
    ap.add_argument("--encoder", type=Path, default=None, help="score this saved encoder (no pretraining)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    train = pd.concat([load("wm811k-processed", args.data / f) for f in args.train], ignore_index=True)
    train = stratified_head(train, args.max_train, args.seed)
    val = stratified_head(load("wm811k-processed", args.data / "val_data.pkl.xz"), args.max_val, args.seed)
    load_s = time.perf_counter() - t0
    y_tr, y_val = single_class(train["labels"]), single_class(val["labels"])
    train, y_tr = train[y_tr >= 0].reset_index(drop=True), y_tr[y_tr >= 0]
    val, y_val = val[y_val >= 0].reset_index(drop=True), y_val[y_val >= 0]

    # baseline: gradient-boosted trees on the geometric features
    from wafersage.modeling.baselines import tree_classifier
    from wafersage.wafers.features import geometric_features

    t = time.perf_counter()
    f_tr, f_val = geometric_features(train), geometric_features(val)
    gbt = tree_classifier(args.seed).fit(f_tr.to_numpy(), y_tr)
    gbt_f1 = macro_f1(y_val, gbt.predict(f_val.to_numpy()))
    gbt_s = time.perf_counter() - t
    if args.baseline_only:
        print(f"trees on geometric features: macro-F1 {gbt_f1:.3f}, {len(val):,} val maps, {gbt_s:.0f} s")
        return

    # the encoder
    t = time.perf_counter()
    g_tr = resample_batch(table_maps(train), args.size)
    g_val = resample_batch(table_maps(val), args.size)
    render_s = time.perf_counter() - t
    params = {
        "seed": args.seed,
        "threads": 1,
        "batch_size": args.batch_size,
        "max_steps": args.max_steps,
        "max_train_s": args.budget_s,
        "warmup_steps": 30,
        "balance_power": args.balance_power,
    }
    t = time.perf_counter()
    if args.encoder is not None:
        from wafersage.modeling.vision_encoder import load_encoder

        model, meta = load_encoder(args.encoder)
        if int(meta["image_size"]) != args.size:
            raise SystemExit(f"{args.encoder}: trained at {meta['image_size']} px, not --size {args.size}")
        history = [{"loss": float("nan")}] * int(meta.get("steps", 0) or 1)
    else:
        model, history = train_encoder(
            g_tr, multi_hot([list(v) for v in train["labels"]]), vision_config(), params
        )
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    z_tr, _ = encode_grids(model, g_tr, views=args.views == 8)
    z_val, p_val = encode_grids(model, g_val, views=args.views == 8)
    embed_s = time.perf_counter() - t
    scores = probe_scores(z_tr, y_tr, z_val, y_val, k=10, seed=args.seed)
    head_f1 = macro_f1(y_val, p_val.argmax(1))
    n_tower = sum(int(p.numel()) for p in model.visual.parameters())

    res = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.processor() or ''} 2-core CPU shared with other jobs",
        "train_maps": len(train),
        "val_maps": len(val),
        "image_size": args.size,
        "visual_tokens": visual_tokens(args.size),
        "tower_params": n_tower,
        "steps": len(history),
        "first_loss": history[0]["loss"],
        "final_loss": float(np.mean([h["loss"] for h in history[-10:]])),
        "pretrain_wall_s": train_s,
        "embed_s": embed_s,
        "render_s": render_s,
        "load_s": load_s,
        "gbt_s": gbt_s,
        "peak_rss_mb": peak_rss_mb(),
        "linear_probe_macro_f1": scores["linear_probe_macro_f1"],
        "knn_macro_f1": scores["knn_macro_f1"],
        "head_macro_f1": head_f1,
        "gbt_geometric_macro_f1": gbt_f1,
        "views": args.views,
        "classes": list(CLASSES),
    }
    ratio = res["linear_probe_macro_f1"] / gbt_f1 if gbt_f1 else float("nan")
    print(
        f"| method (WM-811K val, {len(val):,} maps, 9-class macro-F1) | macro-F1 | ratio to trees |\n"
        "| --- | --- | --- |\n"
        f"| encoder linear probe (frozen, {len(history)} steps, {train_s:.0f} s) "
        f"| {res['linear_probe_macro_f1']:.3f} | {ratio:.2f} |\n"
        f"| encoder k-NN (k=10, cosine) | {res['knn_macro_f1']:.3f} | {res['knn_macro_f1'] / gbt_f1:.2f} |\n"
        f"| encoder's own head (GCE) | {head_f1:.3f} | {head_f1 / gbt_f1:.2f} |\n"
        f"| baseline: HistGradientBoosting on geometric features ({gbt_s:.0f} s) | {gbt_f1:.3f} | 1.00 |\n\n"
        f"train maps {len(train):,} ({', '.join(args.train)}), image {args.size} px "
        f"({res['visual_tokens']} visual tokens), tower {n_tower:,} params, pretraining {train_s:.0f} s "
        f"wall, embedding {embed_s:.0f} s ({args.views} view(s)), peak RSS {res['peak_rss_mb']:.0f} MB, "
        f"loss {res['first_loss']:.3f} -> {res['final_loss']:.3f}; {res['date']}, {res['machine']}"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
