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
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score

from wafersage.encoding import FAIL, OFF, to_canonical
from wafersage.rawtable import decode_map
from wafersage.synthetic import CLASS_MIX_PRESETS, SyntheticConfig, generate
from wafersage.taxonomy import CLASS_INDEX, CLASSES, canonical

ROOT = Path(__file__).resolve().parents[1]
N_RADIAL = 10
N_SECTORS = 8
EIGHT = np.ones((3, 3), dtype=bool)


def data_dir() -> Path:
    env = os.environ.get("WAFERSAGE_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def load_real(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Canonical maps and class indices of a processed WM-811K pickle."""
    try:
        from wafersage.loaders import load  # the restricted loader, where present

        df = load("wm811k-processed", path)
        maps = [decode_map(b, r, c) for b, r, c in zip(df["map"], df["rows"], df["cols"], strict=True)]
        labels = df["labels"].map(lambda v: v[0] if len(v) else "none")
    except ImportError:
        # Trusted local data shipped beside the repository: plain pandas.read_pickle is fine here.
        df = pd.read_pickle(path)
        maps = [to_canonical(a, "processed") for a in df["waferMap"]]
        labels = df["failureType"].map(lambda v: canonical("none" if v is None else str(v)))
    return maps, np.array([CLASS_INDEX[c] for c in labels])


def _polar(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    y = (np.arange(rows) + 0.5 - rows / 2) / (rows / 2)
    x = (np.arange(cols) + 0.5 - cols / 2) / (cols / 2)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return xx, yy, np.hypot(xx, yy), np.mod(np.arctan2(xx, -yy), 2 * np.pi)


_POLAR: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}


def features(m: np.ndarray) -> np.ndarray:
    """Size-independent geometric features of one canonical map."""
    key = m.shape
    if key not in _POLAR:
        _POLAR[key] = _polar(*key)
    xx, yy, rr, th = _POLAR[key]
    on = m != OFF
    fail = m == FAIL
    pad = np.pad(on, 1)
    rim = on & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
    r_on = rr[on] / max(rr[on].max(), 1e-6)
    f_on = fail[on]
    n_on = max(on.sum(), 1)
    rb = np.minimum((r_on * N_RADIAL).astype(int), N_RADIAL - 1)
    cnt = np.bincount(rb, minlength=N_RADIAL)
    radial = np.bincount(rb, weights=f_on, minlength=N_RADIAL) / np.maximum(cnt, 1)
    sb = np.minimum((th[on] / (2 * np.pi) * N_SECTORS).astype(int), N_SECTORS - 1)
    outer = r_on > 0.7
    sc = np.bincount(sb[outer], minlength=N_SECTORS)
    sectors = np.bincount(sb[outer], weights=f_on[outer], minlength=N_SECTORS) / np.maximum(sc, 1)
    rim_frac = fail[rim].mean() if rim.any() else 0.0
    # fails with >= 3 failing 8-neighbours: clustered, not random
    nb = ndimage.convolve(fail.astype(np.int8), EIGHT.astype(np.int8), mode="constant") - fail
    dense = fail & (nb >= 3)
    dense_frac = dense.sum() / n_on
    ft = fail.sum()
    th_f = th[fail & (rr > 0.15)]
    conc = float(np.abs(np.exp(1j * th_f).mean())) if th_f.size else 0.0
    lab, n_comp = ndimage.label(dense, structure=EIGHT)
    comp = np.zeros(9)
    if n_comp:
        sizes = np.bincount(lab.ravel())[1:]
        order = np.argsort(sizes)[::-1]
        big = lab == order[0] + 1
        a = sizes[order[0]]
        px, py = xx[big], yy[big]
        cov = np.cov(np.stack([px, py])) if a > 1 else np.zeros((2, 2))
        ev = np.sort(np.linalg.eigvalsh(cov))[::-1] if a > 2 else np.array([1.0, 1.0])
        ecc = float(np.sqrt(max(0.0, 1 - ev[1] / max(ev[0], 1e-9))))
        second = sizes[order[1]] / n_on if n_comp > 1 else 0.0
        comp = np.array(
            [
                a / n_on,
                second / 1.0,
                np.hypot(px.mean(), py.mean()),
                rr[big].mean(),
                rr[big].std(),
                ecc,
                np.sqrt(ev[0]) if a > 2 else 0.0,
                min(n_comp, 50) / 50,
                a / max(ft, 1),
            ]
        )
    return np.concatenate(
        [
            [ft / n_on, rim_frac, dense_frac, dense.sum() / max(ft, 1), conc],
            radial,
            np.sort(sectors),
            [sectors.std()],
            comp,
        ]
    )


def featurise(maps: list[np.ndarray]) -> np.ndarray:
    return np.stack([features(m) for m in maps])


def synthetic_set(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, pd.DataFrame]:
    cfg = SyntheticConfig(n_wafers=n, seed=seed, mixed_fraction=0.0)
    df = generate(cfg)
    maps = [decode_map(b, r, c) for b, r, c in zip(df["map"], df["rows"], df["cols"], strict=True)]
    y = np.array([CLASS_INDEX[v[0]] for v in df["labels"]])
    # weight classes to WM-811K's labelled prior, so both models see the same class balance
    prior = np.array([CLASS_MIX_PRESETS["wm811k"][c] for c in CLASSES], dtype=float)
    prior /= prior.sum()
    have = np.bincount(y, minlength=len(CLASSES)) / len(y)
    w = (prior / np.maximum(have, 1e-9))[y]
    return maps, y, w, df


def fit_score(X: np.ndarray, y: np.ndarray, w: np.ndarray | None, Xv: np.ndarray, yv: np.ndarray) -> dict:
    clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.08, random_state=0)
    clf.fit(X, y, sample_weight=w)
    pred = clf.predict(Xv)
    labels = list(range(len(CLASSES)))
    return {
        "macro": f1_score(yv, pred, labels=labels, average="macro", zero_division=0),
        "per_class": f1_score(yv, pred, labels=labels, average=None, zero_division=0),
    }


def class_stats(maps: list[np.ndarray], y: np.ndarray) -> dict[int, tuple[float, np.ndarray]]:
    out = {}
    for k in range(len(CLASSES)):
        sel = [m for m, c in zip(maps, y, strict=True) if c == k][:2000]
        if not sel:
            continue
        F = featurise(sel)
        prof = F[:, 5 : 5 + N_RADIAL].mean(0)
        out[k] = (float(F[:, 0].mean()), prof[::2] / 2 + prof[1::2] / 2)
    return out


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
    ap.add_argument("--gallery", default=str(ROOT / "docs" / "img" / "synthetic_vs_real.png"))
    args = ap.parse_args()
    wm = data_dir() / "wm811k"
    train_path, val_path = wm / f"{args.real_train}.pkl.xz", wm / "val_data.pkl.xz"
    if not (train_path.exists() and val_path.exists()):
        print(f"SKIP: real WM-811K data not found under {wm} (set WAFERSAGE_SHARED_DATA)")
        return 0
    t0 = time.perf_counter()
    real_maps, yr = load_real(train_path)
    val_maps, yv = load_real(val_path)
    syn_maps, ys, ws, _ = synthetic_set(args.n_synthetic, args.seed)
    Xr, Xv, Xs = featurise(real_maps), featurise(val_maps), featurise(syn_maps)
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

    st_s, st_r = class_stats(syn_maps, ys), class_stats(real_maps, yr)
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
    gallery(syn_maps, ys, val_maps, yv, Path(args.gallery))
    print(f"\ngallery: {args.gallery}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
