"""How real do the synthetic maps look? Train a small classifier on synthetic maps and on real
WM-811K maps, score both on the real validation split, compare per-class statistics, and draw a
gallery.

    python benchmarks/synthetic_realism.py [--n-synthetic 20000] [--real-train train_29_split]

Needs ``../shared/data/wm811k`` (override with env ``WAFERSAGE_SHARED_DATA``); skips cleanly
without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from wafersage.modeling.baselines import tree_classifier
from wafersage.wafers.features import geometric_features
from wafersage.wafers.loaders import load
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.synthetic import CLASS_MIX_PRESETS, SyntheticConfig, generate
from wafersage.wafers.taxonomy import CLASS_INDEX, CLASSES

ROOT = Path(__file__).resolve().parents[1]
#: The radial profile, in 5 bins (pairs of features.py's 10), centre to edge.
RADIAL = [f"radial_{k}" for k in range(10)]


def data_dir() -> Path:
    env = os.environ.get("WAFERSAGE_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def load_real(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """A processed WM-811K pickle through the restricted loader, and its class indices."""
    df = load("wm811k-processed", path)
    return df, np.array([CLASS_INDEX[v[0] if len(v) else "none"] for v in df["labels"]])


def synthetic_set(n: int, seed: int, noise_rate: float = 0.1) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Single-pattern synthetic maps, their observed class indices, and weights that give them
    WM-811K's labelled class prior (so both models see the same class balance)."""
    cfg = SyntheticConfig(n_wafers=n, seed=seed, mixed_fraction=0.0, noise_rate=noise_rate)
    df = generate(cfg)
    y = np.array([CLASS_INDEX[v[0]] for v in df["labels"]])
    prior = np.array([CLASS_MIX_PRESETS["wm811k"][c] for c in CLASSES], dtype=float)
    prior /= prior.sum()
    have = np.bincount(y, minlength=len(CLASSES)) / len(y)
    return df, y, (prior / np.maximum(have, 1e-9))[y]


def fit_score(X: pd.DataFrame, y: np.ndarray, w: np.ndarray | None, Xv: pd.DataFrame, yv: np.ndarray) -> dict:
    clf = tree_classifier(seed=0).fit(X.to_numpy(), y, sample_weight=w)
    pred = clf.predict(Xv.to_numpy())
    labels = list(range(len(CLASSES)))
    return {
        "macro": f1_score(yv, pred, labels=labels, average="macro", zero_division=0),
        "per_class": f1_score(yv, pred, labels=labels, average=None, zero_division=0),
    }


def class_stats(F: pd.DataFrame, y: np.ndarray) -> dict[int, tuple[float, np.ndarray]]:
    """Per class: mean fail fraction and the 5-bin radial fail profile."""
    out = {}
    for k in range(len(CLASSES)):
        sel = F[y == k]
        if len(sel):
            prof = sel[RADIAL].to_numpy().mean(0)
            out[k] = (float(sel["fail_frac"].mean()), prof[::2] / 2 + prof[1::2] / 2)
    return out


def maps_of(df: pd.DataFrame) -> list[np.ndarray]:
    return [decode_map(b, r, c) for b, r, c in zip(df["map"], df["rows"], df["cols"], strict=True)]


def gallery(
    syn: list[np.ndarray], ys: np.ndarray, real: list[np.ndarray], yr: np.ndarray, path: Path, k: int = 3
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["white", "#9ecae1", "#cb181d"])
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(len(CLASSES), 2 * k, figsize=(2 * k * 1.3, len(CLASSES) * 1.35))
    for row, name in enumerate(CLASSES):
        for half, (maps, y, tag) in enumerate(((syn, ys, "synthetic"), (real, yr, "real"))):
            idx = np.flatnonzero(y == row)
            pick = rng.choice(idx, size=min(k, idx.size), replace=False) if idx.size else []
            for j in range(k):
                ax = axes[row, half * k + j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(pick):
                    ax.imshow(maps[pick[j]], cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
                if row == 0:
                    ax.set_title(tag, fontsize=8)
                if half == 0 and j == 0:
                    ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-synthetic", type=int, default=20000)
    ap.add_argument("--real-train", default="train_29_split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise-rate", type=float, default=0.1, help="synthetic label noise (0: clean labels)")
    ap.add_argument("--gallery", default=str(ROOT / "docs" / "img" / "synthetic_vs_real.png"))
    args = ap.parse_args()
    wm = data_dir() / "wm811k"
    train_path, val_path = wm / f"{args.real_train}.pkl.xz", wm / "val_data.pkl.xz"
    if not (train_path.exists() and val_path.exists()):
        print(f"SKIP: real WM-811K data not found under {wm} (set WAFERSAGE_SHARED_DATA)")
        return 0
    t0 = time.perf_counter()
    real_df, yr = load_real(train_path)
    val_df, yv = load_real(val_path)
    syn_df, ys, ws = synthetic_set(args.n_synthetic, args.seed, args.noise_rate)
    Xr, Xv, Xs = geometric_features(real_df), geometric_features(val_df), geometric_features(syn_df)
    t1 = time.perf_counter()
    res_syn = fit_score(Xs, ys, ws, Xv, yv)
    res_real = fit_score(Xr, yr, None, Xv, yv)
    t2 = time.perf_counter()

    print(f"\n## Realism: classifier trained on synthetic vs real, scored on real val ({len(yv)} maps)\n")
    print(f"features {t1 - t0:.1f} s, training+scoring {t2 - t1:.1f} s\n")
    print(f"| class | F1 synthetic-trained ({len(ys)} maps) | F1 real-trained ({len(yr)} maps) | val n |")
    print("|---|---|---|---|")
    nv = np.bincount(yv, minlength=len(CLASSES))
    for k, name in enumerate(CLASSES):
        print(f"| {name} | {res_syn['per_class'][k]:.3f} | {res_real['per_class'][k]:.3f} | {nv[k]} |")
    print(f"| **macro-F1** | **{res_syn['macro']:.3f}** | **{res_real['macro']:.3f}** | {len(yv)} |")

    st_s, st_r = class_stats(Xs, ys), class_stats(Xr, yr)
    print("\n## Per-class statistics: mean fail fraction and radial fail profile (5 bins, centre->edge)\n")
    print("| class | fail frac synthetic | fail frac real | radial synthetic | radial real |")
    print("|---|---|---|---|---|")
    for k, name in enumerate(CLASSES):
        if k in st_s and k in st_r:
            fs, ps = st_s[k]
            fr, pr = st_r[k]
            pss = " ".join(f"{v:.2f}" for v in ps)
            prs = " ".join(f"{v:.2f}" for v in pr)
            print(f"| {name} | {fs:.3f} | {fr:.3f} | {pss} | {prs} |")
    gallery(maps_of(syn_df), ys, maps_of(val_df), yv, Path(args.gallery))
    print(f"\ngallery: {args.gallery}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
