"""Bootstrap confidence intervals, vectorised: a metric is a function of a (B, n) matrix of
resampling weights (row b: how often each item is drawn in replicate b) returning B values, so a
point estimate is the metric at weights 1 and a paired difference resamples both models with the
same weights."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from wafersage.wafers import taxonomy

Metric = Callable[[np.ndarray], np.ndarray]
#: Paired model-vs-model differences reported wherever both models answered: (name, a, b) = a - b.
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("gspo_vs_sft", "gspo", "sft"),
    ("sft_vs_base", "sft", "base"),
)


def mean_metric(values: Sequence[float]) -> Metric:
    """The (weighted) mean of ``values``, ignoring NaN (unscored) items."""
    x = np.asarray(values, dtype=float)
    ok = ~np.isnan(x)
    x0 = np.where(ok, x, 0.0)

    def metric(w: np.ndarray) -> np.ndarray:
        den = w @ ok.astype(float)
        return np.where(den > 0, (w @ x0) / np.where(den > 0, den, 1.0), np.nan)

    return metric


def label_matrix(label_sets: Sequence[set[str] | frozenset[str]]) -> np.ndarray:
    """(n, len(taxonomy.classes())) booleans: class c in set i."""
    return np.array([[c in s for c in taxonomy.classes()] for s in label_sets], dtype=bool).reshape(
        len(label_sets), -1
    )


def macro_f1_metric(truth: Sequence[set[str]], pred: Sequence[set[str]]) -> Metric:
    """Macro-F1 over the classes present in truth or predictions (as ``type_scoring.type_scores``:
    multi-label one-vs-rest; items whose truth names no class are left out)."""
    keep = np.array([bool(t) for t in truth], dtype=bool)
    t, p = label_matrix(truth).astype(float), label_matrix(pred).astype(float)
    tp, fp, fn = t * p, (1 - t) * p, t * (1 - p)

    def metric(w: np.ndarray) -> np.ndarray:
        wk = w * keep
        a, b, c = wk @ tp, wk @ fp, wk @ fn
        den = 2 * a + b + c
        f1 = np.where(den > 0, 2 * a / np.where(den > 0, den, 1.0), np.nan)
        present = (den > 0).sum(axis=1)
        return np.where(present > 0, np.nansum(f1, axis=1) / np.maximum(present, 1), np.nan)

    return metric


def accuracy_metric(truth: Sequence[set[str]], pred: Sequence[set[str]]) -> Metric:
    """Exact label-set match, over items whose truth names a class."""
    keep = np.array([bool(t) for t in truth], dtype=bool)
    hit = np.array([t == p for t, p in zip(truth, pred, strict=True)], dtype=float)
    return mean_metric(np.where(keep, hit, np.nan))


def per_class_f1(truth: Sequence[set[str]], pred: Sequence[set[str]]) -> dict[str, dict[str, float | int]]:
    """One-vs-rest ``f1`` (4 decimals) and ``support`` per class seen in truth or predictions."""
    out: dict[str, dict[str, float | int]] = {}
    for c in taxonomy.classes():
        tp = sum(c in a and c in b for a, b in zip(truth, pred, strict=True))
        fp = sum(c not in a and c in b for a, b in zip(truth, pred, strict=True))
        fn = sum(c in a and c not in b for a, b in zip(truth, pred, strict=True))
        if tp + fp + fn:
            out[c] = {"f1": round(2 * tp / (2 * tp + fp + fn), 4), "support": tp + fn}
    return out


def weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) multinomial resampling counts, seeded."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def ci(
    metric: Metric, n: int, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """``value`` and the percentile bootstrap interval ``ci_low`` / ``ci_high``."""
    point = float(metric(np.ones((1, n)))[0]) if n else float("nan")
    lo, hi = _interval(metric(weights(n, n_boot, seed)), confidence) if n else (float("nan"),) * 2
    return {"value": point, "ci_low": lo, "ci_high": hi}


def paired_diff(
    a: Metric, b: Metric, n: int, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """``a - b`` on the same ``n`` items, with a paired bootstrap interval (same resamples)."""
    if n == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    one = np.ones((1, n))
    w = weights(n, n_boot, seed)
    lo, hi = _interval(a(w) - b(w), confidence)
    return {"diff": float(a(one)[0] - b(one)[0]), "ci_low": lo, "ci_high": hi}


def rounded(d: dict[str, float], digits: int = 4) -> dict[str, float | None]:
    """Values rounded for JSON; NaN becomes ``None``."""
    return {k: (None if v is None or np.isnan(v) else round(float(v), digits)) for k, v in d.items()}
