"""The tiny VLM on REAL WM-811K: defect-type macro-F1 from its answers on the full val split, against
gradient-boosted trees on the geometric features of the same maps (paired bootstrap CI).

One run = one configuration (image size, vision tower pretrained or random, grounding mode, step
budgets), built and trained with the pipeline's own code: ``vision_train.train_encoder`` (the
pretrain_vision stage), ``init_model.run``, ``sft.run`` (TRL SFT), and the serving ``Predictor``
for the answers. The SFT data is one question a train map ("What type of defect pattern is
visible on this wafer map?", answer: the class), with rare classes repeated sqrt-balanced
(``repeat_c = round(sqrt(n_max / n_c))``); 2% of train is the SFT val split. Encoders are cached
per (train files, size, steps) under ``--cache``, so the size / tower / grounding variants of a
study share one pretraining.

    .venv/bin/python benchmarks/vlm_real.py --size 96 --grounding image --json out/96.json \\
        --answers out/96.parquet [--vision off] [--against out/other.parquet]

Prints one markdown row; ``--json`` keeps every figure, ``--answers`` the per-map answers (for a
paired comparison of two runs with ``--against``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wm811k"
QUESTION = "What type of defect pattern is visible on this wafer map?"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def answer_of(labels: list[str]) -> str:
    from wafersage.wafers.taxonomy import NONE

    return "No defect pattern." if not labels or list(labels) == [NONE] else " and ".join(labels) + "."


def png(m: np.ndarray, size: int) -> bytes:
    from wafersage.wafers.render import render_map

    buf = io.BytesIO()
    render_map(m, size).save(buf, format="PNG")
    return buf.getvalue()


def sqrt_balanced(df: pd.DataFrame) -> pd.DataFrame:
    key = df["labels"].map(lambda v: "+".join(v))
    counts = key.value_counts()
    reps = key.map(lambda k: max(1, round(math.sqrt(counts.max() / counts[k]))))
    return df.loc[df.index.repeat(reps)].reset_index(drop=True)


def vqa_frame(df: pd.DataFrame, size: int) -> pd.DataFrame:
    from wafersage.wafers.rawtable import decode_map

    images = [
        png(decode_map(b, r, c), size) for b, r, c in zip(df["map"], df["rows"], df["cols"], strict=True)
    ]
    return pd.DataFrame(
        {
            "wafer_id": df["wafer_id"].astype(str),
            "image": images,
            "question": QUESTION,
            "answer": [answer_of(list(v)) for v in df["labels"]],
            "category": "type",
            "labels": [list(v) for v in df["labels"]],
        }
    )


def encoder_dir(args: argparse.Namespace, train: pd.DataFrame) -> tuple[Path, dict]:
    """The pretrained encoder (cached), with its linear-probe / k-NN figures on val."""
    from wafersage.modeling.tiny_config import vision_config
    from wafersage.modeling.vision_encoder import multi_hot, save_encoder, table_maps
    from wafersage.modeling.vision_inputs import resample_batch
    from wafersage.modeling.vision_train import train_encoder

    key = f"{'+'.join(Path(f).stem for f in args.train)}-s{args.size}-e{args.encoder_steps}-seed{args.seed}"
    out = args.cache / key
    if (out / "encoder_run.json").exists():
        return out, json.loads((out / "encoder_run.json").read_text())
    params = {"seed": args.seed, "threads": 1, "max_steps": args.encoder_steps, "max_train_s": 1e9}
    grids = resample_batch(table_maps(train), args.size)
    t = time.perf_counter()
    model, history = train_encoder(
        grids, multi_hot([list(v) for v in train["labels"]]), vision_config(), params
    )
    wall = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    save_encoder(model, out, args.size, {"steps": len(history), "n_train": len(train)})
    rec = {
        "encoder_steps": len(history),
        "encoder_wall_s": round(wall, 1),
        "encoder_peak_rss_mb": peak_rss_mb(),
    }
    (out / "encoder_run.json").write_text(json.dumps(rec, indent=2))
    return out, rec


def trees(train: pd.DataFrame, val: pd.DataFrame, seed: int) -> list[set[str]]:
    from wafersage.modeling.baselines import tree_classifier
    from wafersage.stages.pretrain_vision import single_class
    from wafersage.wafers.features import geometric_features
    from wafersage.wafers.taxonomy import CLASSES

    y = single_class(train["labels"])
    ok = y >= 0
    gbt = tree_classifier(seed).fit(geometric_features(train).to_numpy()[ok], y[ok])
    return [{CLASSES[i]} for i in gbt.predict(geometric_features(val).to_numpy())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--train", nargs="+", default=["train_20_split.pkl.xz"])
    ap.add_argument("--max-val", type=int, default=None, help="subsample val (default: the full split)")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--vision", choices=("pretrain", "off"), default="pretrain")
    ap.add_argument("--grounding", default="image")
    ap.add_argument("--encoder-steps", type=int, default=300)
    ap.add_argument("--sft-steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path(".cache/vlm_real"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--answers", type=Path, default=None)
    ap.add_argument(
        "--against", type=Path, default=None, help="answers of another run: paired CI of the difference"
    )
    args = ap.parse_args()
    if not (args.data / "val_data.pkl.xz").exists():
        raise SystemExit(f"skipped: no WM-811K data under {args.data}")
    tmp = Path(tempfile.mkdtemp(prefix="vlm_real-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")

    from wafersage.annotation.answer_parser import parse_labels
    from wafersage.evaluation.stats import ci, macro_f1_metric, paired_diff
    from wafersage.serving.predictor import Predictor
    from wafersage.stages import init_model, sft
    from wafersage.wafers.loaders import load

    t0 = time.perf_counter()
    train = pd.concat([load("wm811k-processed", args.data / f) for f in args.train], ignore_index=True)
    val = load("wm811k-processed", args.data / "val_data.pkl.xz")
    if args.max_val:
        val = val.sample(n=args.max_val, random_state=args.seed).reset_index(drop=True)
    truth = [set(v) for v in val["labels"]]
    tree_pred = trees(train, val, args.seed)
    trees_s = time.perf_counter() - t0

    rec: dict = {}
    vision = Path("off")
    if args.vision == "pretrain":
        vision, rec = encoder_dir(args, train)

    rng = np.random.default_rng(args.seed)
    held = rng.random(len(train)) < 0.02
    vqa = tmp / "vqa"
    vqa.mkdir()
    sft_train = vqa_frame(sqrt_balanced(train[~held].reset_index(drop=True)), args.size)
    sft_train.to_parquet(vqa / "train.parquet")
    vqa_frame(train[held].reset_index(drop=True), args.size).to_parquet(vqa / "val.parquet")
    vqa_frame(train[held].head(64).reset_index(drop=True), args.size).to_parquet(vqa / "test.parquet")
    init_model.run(
        {"vision_init": str(vision) if args.vision == "pretrain" else "off", "grounding": args.grounding},
        {},
        vqa / "train.parquet",
        vision,
        tmp / "base",
        args.size,
    )
    sft_params = {
        "seed": 3407,
        "threads": 1,
        "max_steps": args.sft_steps,
        "learning_rate": args.lr,
        "eval_steps": max(100, args.sft_steps // 4),
        "type_eval_max": 64,
        "rule_eval_max": 0,
        "sample_generations": 4,
    }
    t = time.perf_counter()
    m = sft.run(sft_params, tmp / "base", vqa, tmp / "sft", tmp / "sft_metrics.json", tmp / "ckpt")
    sft_s = time.perf_counter() - t

    from wafersage.wafers.rawtable import decode_map
    from wafersage.wafers.render import render_map

    pred = Predictor(tmp / "sft", batch_size=64, max_new_tokens=12)
    images = [
        render_map(decode_map(b, r, c), args.size)
        for b, r, c in zip(val["map"], val["rows"], val["cols"], strict=True)
    ]
    t = time.perf_counter()
    answers = pred.answer(images, [QUESTION] * len(images))
    answer_s = time.perf_counter() - t
    vlm = [parse_labels(a) for a in answers]
    f_vlm, f_trees = macro_f1_metric(truth, vlm), macro_f1_metric(truth, tree_pred)
    n = len(truth)
    diff = paired_diff(f_vlm, f_trees, n, n_boot=1000, seed=0)
    res = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, no GPU",
        "train": args.train,
        "train_maps": len(train),
        "sft_rows": len(sft_train),
        "val_maps": n,
        "image_size": args.size,
        "vision": args.vision,
        "grounding": args.grounding,
        **rec,
        "sft_steps": m["steps"],
        "sft_wall_s": round(sft_s, 1),
        "sft_s_per_step": round(m["train_wall_s"] / max(m["steps"], 1), 3),
        "answers_per_s": round(n / answer_s, 1),
        "vlm_macro_f1": ci(f_vlm, n, 1000, 0),
        "trees_macro_f1": ci(f_trees, n, 1000, 0),
        "vlm_minus_trees": diff,
        "trees_s": round(trees_s, 1),
        "peak_rss_mb": round(peak_rss_mb()),
    }
    if args.against is not None:
        other = pd.read_parquet(args.against)
        if list(other["wafer_id"]) != list(val["wafer_id"].astype(str)):
            raise SystemExit(f"{args.against}: answers are for other val maps")
        f_other = macro_f1_metric(truth, [parse_labels(a) for a in other["answer"]])
        res["minus_against"] = {"against": str(args.against), **paired_diff(f_vlm, f_other, n, 1000, 0)}
    if args.answers:
        args.answers.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"wafer_id": val["wafer_id"].astype(str), "answer": answers}).to_parquet(args.answers)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    v, tr, d = res["vlm_macro_f1"], res["trees_macro_f1"], res["vlm_minus_trees"]
    print(
        f"| {args.size} | {args.vision} | {args.grounding} | {res['sft_steps']} | {res['sft_s_per_step']} "
        f"| {v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}] | {tr['value']:.3f} "
        f"| {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] |"
    )
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
