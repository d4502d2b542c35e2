"""Flipped-label detection of the clean stage vs cleanlab on synthetic data, and downstream value
of the cleaned labels on real WM-811K.

    .venv/bin/python benchmarks/clean_quality.py --n 5000 20000 50000 --noise 0.05 0.1 0.2 [--oracle]
    .venv/bin/python benchmarks/clean_quality.py --raw data/raw/wafers.parquet  # the pipeline's own data
    .venv/bin/python benchmarks/clean_quality.py --noise --real ../shared/data/wm811k

Prints a markdown table. Both detectors use the same first-pass out-of-fold probabilities on the
same features. The pool is what the next stages train on; its label accuracy is against the
generator's true labels (class keys). ``--oracle`` adds the best F1 any threshold on
``1 - p(given label)`` reaches when the classifier is trained on the *true* labels (an oracle no
detector has): a reference for what one classifier on these features can separate, not a bound on
a detector that combines scores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from wafersage.cleaning import CleanConfig, clean_labels, cleanlab_flags, detection_scores
from wafersage.features import geometric_features
from wafersage.params import load_section


def oracle_f1(
    x: np.ndarray, given: np.ndarray, true: np.ndarray, truth: np.ndarray, cfg: CleanConfig
) -> float:
    """Best flipped-label F1 over all thresholds of ``1 - p(given)`` from out-of-fold probabilities
    of the same classifier trained on the true class keys."""
    from sklearn.metrics import precision_recall_curve

    from wafersage.cleaning import oof_probs, standardise

    keys = sorted(set(given) | set(true))
    yt = np.array([keys.index(k) for k in true])
    yg = np.array([keys.index(k) for k in given])
    probs = oof_probs(standardise(x), yt, np.ones(len(x), bool), len(keys), cfg)
    p, r, _ = precision_recall_curve(truth, 1.0 - probs[np.arange(len(x)), yg])
    return float((2 * p * r / np.maximum(p + r, 1e-12)).max())


def synthetic_rows(n: int, noises: list[float], seed: int, cfg: CleanConfig, oracle: bool) -> list[str]:
    from wafersage.synthetic import SyntheticConfig, generate

    return [
        detection_row(generate(SyntheticConfig(n_wafers=n, seed=seed, noise_rate=noise)), noise, cfg, oracle)
        for noise in noises
    ]


def detection_row(df: pd.DataFrame, noise: float, cfg: CleanConfig, oracle: bool) -> str:
    """One table row for a raw table that carries ``true_labels`` and ``noise_flipped``."""
    from wafersage.cleaning import label_keys

    x = geometric_features(df).to_numpy()
    t = time.perf_counter()
    res = clean_labels(x, df["labels"], cfg)
    wall = time.perf_counter() - t
    truth = df["noise_flipped"].to_numpy(bool)
    ours = detection_scores(res.verdict != "keep", truth)
    cl = detection_scores(cleanlab_flags(res), truth)
    ratio = ours["f1"] / cl["f1"] if cl["f1"] else float("nan")
    true = label_keys(df["true_labels"], cfg.combo_min_count)
    pool = res.verdict != "flag"
    final = np.asarray(res.final_key, dtype=object)
    extra = (
        f" {pool.sum():,} | {(final[pool] == true[pool]).mean():.4f} | {(res.given_key == true).mean():.4f} |"
    )
    if oracle:
        extra += f" {oracle_f1(x, res.given_key, true, truth, cfg):.3f} |"
    row = (
        f"| {len(df):,} | {noise:.0%} | {int(truth.sum())} | {ours['precision']:.3f} | {ours['recall']:.3f} "
        f"| {ours['f1']:.3f} | {cl['precision']:.3f} | {cl['recall']:.3f} | {cl['f1']:.3f} | {ratio:.2f}x "
        f"| {wall:.0f} |{extra}"
    )
    print(row, flush=True)
    return row


def real_rows(folder: Path, train: str, cfg: CleanConfig, seed: int) -> list[str]:
    from sklearn.metrics import f1_score
    from threadpoolctl import threadpool_limits

    from wafersage.baselines import tree_classifier
    from wafersage.loaders import load

    tr = load("wm811k-processed", folder / train)
    va = load("wm811k-processed", folder / "val_data.pkl.xz")
    tr = tr[tr["labels"].map(len) > 0].reset_index(drop=True)
    va = va[va["labels"].map(len) > 0].reset_index(drop=True)
    xt, xv = geometric_features(tr).to_numpy(), geometric_features(va).to_numpy()
    res = clean_labels(xt, tr["labels"], cfg)
    yv = va["labels"].map(lambda v: v[0]).to_numpy()
    out = []
    with threadpool_limits(1):
        for name, mask, y in (
            ("raw labels", np.ones(len(tr), bool), tr["labels"].map(lambda v: v[0]).to_numpy()),
            ("cleaned (keep + relabel)", res.verdict != "flag", np.asarray(res.final_key, dtype=object)),
        ):
            clf = tree_classifier(seed).fit(xt[mask], y[mask].astype(str))
            f1 = f1_score(yv, clf.predict(xv), average="macro")
            out.append(f"| {name} | {int(mask.sum())} | {f1:.4f} |")
            print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[5000])
    ap.add_argument("--oracle", action="store_true", help="add the truth-trained classifier's best F1")
    ap.add_argument("--noise", type=float, nargs="*", default=[0.05, 0.1, 0.2])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument(
        "--raw", type=Path, default=None, help="a raw table with true_labels (e.g. the pipeline's)"
    )
    ap.add_argument("--real", type=Path, default=None)
    ap.add_argument("--train", default="train_29_split.pkl.xz")
    a = ap.parse_args()
    cfg = CleanConfig.from_dict(load_section("clean", a.params))
    if a.noise or a.raw:
        head = "| N | noise | flipped | P | R | F1 | cleanlab P | cleanlab R | cleanlab F1 | F1 ratio "
        head += "| clean s | pool (keep + relabel) | pool label accuracy | given-label accuracy |"
        head += " oracle classifier F1 |" if a.oracle else ""
        print(head + "\n" + "| --- " * (head.count("|") - 1) + "|")
    if a.raw:
        from wafersage.rawtable import read_raw

        df = read_raw(a.raw)
        detection_row(df, float(df["noise_flipped"].mean()), cfg, a.oracle)
    elif a.noise:
        for n in a.n:
            synthetic_rows(n, a.noise, a.seed, cfg, a.oracle)
    if a.real:
        print("\n| training labels | train maps | val macro-F1 |\n| --- | --- | --- |")
        real_rows(a.real, a.train, cfg, a.seed)


if __name__ == "__main__":
    main()
