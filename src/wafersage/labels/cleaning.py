"""Label cleaning on a feature matrix: per-label clustering and outlier scores, one noise score,
a verdict (keep / flag / relabel) with a suggested label, and a typical/hard tag.

Each wafer's *key* is its primary label (``+``-joined for mixed maps); a mixed combination with at
least ``combo_min_count`` wafers is its own class, rarer combinations share the pooled class
``mixed``. Four scores in [0, 1], higher = more suspicious:

- ``classifier``: 1 - the out-of-fold probability of the given key (extremely randomised trees);
- ``knn``: share of the k nearest labelled neighbours (standardised features) with another key;
- ``cluster``: K-Means per key (the paper's choice); ``d_own / (d_own + d_other)``, the distance to
  the nearest centroid of the wafer's own key against the nearest centroid of any other key;
- ``density``: local outlier factor within the key, ``1 - 1/LOF`` clipped to [0, 1].

The scores come from a second pass: confident learning (cleanlab) prunes the likely mislabels
found with a first pass of out-of-fold probabilities, and the classifier, the k-NN reference,
the centroids and the density models are refit on the pruned wafers only, so the noise they were
fit on no longer hides itself (``refit: false`` scores with the first pass). Their weighted mean is
the noise score. Labelled wafers of a key with too few wafers to score, and unlabelled wafers, get
no score; they are flagged, or relabelled when the suggestion is confident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from wafersage.errors import WaferSageError
from wafersage.wafers.taxonomy import primary_label

MIXED = "mixed"
VERDICTS = ("keep", "flag", "relabel")
SCORES = ("classifier", "knn", "cluster", "density")


@dataclass(frozen=True)
class CleanConfig:
    """The ``clean`` section of params.yaml (the algorithm's part)."""

    seed: int = 0
    folds: int = 5
    min_class_size: int = 5
    combo_min_count: int = 30
    kmeans_per_label: int = 4
    knn_k: int = 15
    knn_reference: int = 20000
    lof_neighbors: int = 20
    density_max_fit: int = 5000
    classifier_trees: int = 200
    classifier_max_train: int = 40000
    refit: bool = True
    weights: dict[str, float] = field(
        default_factory=lambda: {"classifier": 0.6, "knn": 0.0, "cluster": 0.1, "density": 0.3}
    )
    flag_threshold: float = 0.66
    relabel_confidence: float = 0.9
    typical_quantile: float = 0.5
    #: BLAS/OpenMP threads: gradient boosting slows down many-fold when the cores are oversubscribed.
    threads: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any], file: str = "params.yaml") -> CleanConfig:
        """Build from the params section, ignoring the stage's I/O keys; check ranges."""
        names = set(cls.__dataclass_fields__)
        cfg = cls(**{k: v for k, v in (d or {}).items() if k in names})
        w = cfg.weights
        checks = [
            (cfg.folds >= 2, "clean.folds must be >= 2"),
            (cfg.min_class_size >= max(2, cfg.folds), "clean.min_class_size must be >= max(2, folds)"),
            (
                cfg.kmeans_per_label >= 1 and cfg.knn_k >= 1 and cfg.lof_neighbors >= 2,
                "clean k's must be >= 1",
            ),
            (
                set(w) <= set(SCORES) and all(float(v) >= 0 for v in w.values()),
                f"clean.weights: keys {SCORES}",
            ),
            (sum(float(v) for v in w.values()) > 0, "clean.weights sum to zero"),
            (
                0.0 <= cfg.flag_threshold <= 1.0 and 0.0 <= cfg.relabel_confidence <= 1.0,
                "thresholds in [0, 1]",
            ),
            (0.0 < cfg.typical_quantile < 1.0, "clean.typical_quantile must be in (0, 1)"),
        ]
        for ok, rule in checks:
            if not ok:
                raise WaferSageError(file, rule)
        return cfg


@dataclass
class CleanResult:
    """Per-wafer outcome (arrays aligned with the input) and the class keys the model used."""

    keys: list[str]  # the scorable classes, column order of ``probs``
    given_key: np.ndarray  # object: key of the given labels, None when unlabelled
    scorable: np.ndarray  # bool
    probs: np.ndarray  # (N, K) first-pass out-of-fold probabilities (fit on all given labels)
    pruned: np.ndarray  # bool: scorable wafers the second pass was fit on
    scores: dict[str, np.ndarray]  # component scores, NaN where not scored
    noise_score: np.ndarray
    verdict: np.ndarray  # object
    suggested: np.ndarray  # object: suggested key or None
    confidence: np.ndarray
    cluster_id: np.ndarray  # int, -1 for flagged
    tag: np.ndarray  # object: typical / hard / None
    final_key: np.ndarray  # object: the kept key, None for flagged
    notes: list[str] = field(default_factory=list)


def label_keys(labels: pd.Series, combo_min_count: int) -> np.ndarray:
    """Each wafer's class key: the primary label, rare combinations pooled as ``mixed``."""
    keys = labels.map(lambda v: primary_label(list(v))).to_numpy(dtype=object)
    counts = pd.Series(keys).value_counts()
    rare = {k for k, c in counts.items() if "+" in k and c < combo_min_count}
    return np.array([MIXED if k in rare else k for k in keys], dtype=object)


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (constant columns left at zero), clipped to +-10."""
    mu = x.mean(0)
    sd = x.std(0)
    sd[sd == 0] = 1.0
    return np.clip((x - mu) / sd, -10, 10).astype(np.float32)


def oof_probs(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, k: int, cfg: CleanConfig, fit: np.ndarray | None = None
) -> np.ndarray:
    """Out-of-fold class probabilities of extremely randomised trees for the ``train`` rows; every
    other row gets the mean over the fold models. Only ``fit`` rows (default: all ``train`` rows)
    are fit on."""
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.model_selection import StratifiedKFold

    n = len(x)
    probs = np.zeros((n, k))
    rows = np.flatnonzero(train)
    rest = np.flatnonzero(~train)
    rng = np.random.default_rng(cfg.seed)
    folds = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
    for fit_idx, hold_idx in folds.split(rows, y[rows]):
        fit_rows = rows[fit_idx] if fit is None else rows[fit_idx[fit[rows[fit_idx]]]]
        if len(fit_rows) > cfg.classifier_max_train:
            fit_rows = np.sort(rng.choice(fit_rows, cfg.classifier_max_train, replace=False))
        clf = ExtraTreesClassifier(
            n_estimators=cfg.classifier_trees, min_samples_leaf=2, n_jobs=cfg.threads, random_state=cfg.seed
        )
        clf.fit(x[fit_rows], y[fit_rows])
        cols = clf.classes_.astype(int)
        probs[np.ix_(rows[hold_idx], cols)] = clf.predict_proba(x[rows[hold_idx]])
        if len(rest):
            probs[np.ix_(rest, cols)] += clf.predict_proba(x[rest]) / cfg.folds
    return probs


def prune(probs: np.ndarray, y: np.ndarray, train: np.ndarray, cfg: CleanConfig) -> np.ndarray:
    """The ``train`` rows confident learning does not flag; a class it would leave with fewer than
    ``min_class_size`` wafers keeps all of its own."""
    rows = np.flatnonzero(train)
    keep = train.copy()
    keep[rows[cleanlab_issues(probs[rows], y[rows])]] = False
    for c in range(probs.shape[1]):
        if (keep & (y == c)).sum() < cfg.min_class_size:
            keep[train & (y == c)] = True
    return keep


def knn_votes(x: np.ndarray, y: np.ndarray, ref: np.ndarray, k: int, cfg: CleanConfig) -> np.ndarray:
    """Share of each class among the ``knn_k`` nearest ``ref`` wafers (self excluded)."""
    from sklearn.neighbors import NearestNeighbors

    ref = np.flatnonzero(ref)
    if len(ref) > cfg.knn_reference:
        ref = np.sort(np.random.default_rng(cfg.seed + 1).choice(ref, cfg.knn_reference, replace=False))
    nn_k = min(cfg.knn_k + 1, len(ref))
    nn = NearestNeighbors(n_neighbors=nn_k, algorithm="brute").fit(x[ref])
    idx = nn.kneighbors(x, return_distance=False)
    nbr = ref[idx]
    is_self = nbr == np.arange(len(x))[:, None]
    drop = np.where(is_self.any(1), is_self.argmax(1), nn_k - 1)  # drop self, else the farthest
    keep = np.ones_like(is_self)
    keep[np.arange(len(x)), drop] = False
    nbr = nbr[keep].reshape(len(x), nn_k - 1)
    votes = np.zeros((len(x), k))
    for j in range(nbr.shape[1]):
        np.add.at(votes, (np.arange(len(x)), y[nbr[:, j]]), 1.0)
    return votes / max(nbr.shape[1], 1)


def cluster_distances(x: np.ndarray, y: np.ndarray, ref: np.ndarray, k: int, cfg: CleanConfig):
    """K-Means per class on its ``ref`` wafers: (N, K) distance to each class's nearest centroid,
    and (N, K) index of that centroid."""
    from sklearn.cluster import KMeans

    dist = np.zeros((len(x), k))
    which = np.zeros((len(x), k), dtype=np.int64)
    rng = np.random.default_rng(cfg.seed + 2)
    for c in range(k):
        members = np.flatnonzero(ref & (y == c))
        if len(members) > 20 * cfg.density_max_fit:
            members = rng.choice(members, 20 * cfg.density_max_fit, replace=False)
        n_clusters = max(1, min(cfg.kmeans_per_label, len(members) // 5))
        km = KMeans(n_clusters=n_clusters, n_init=3, random_state=cfg.seed).fit(x[members])
        d = np.sqrt(((x[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)) if len(x) < 50000 else None
        if d is None:
            d = km.transform(x)
        dist[:, c] = d.min(1)
        which[:, c] = d.argmin(1)
    return dist, which


def density_scores(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, ref: np.ndarray, k: int, cfg: CleanConfig
) -> np.ndarray:
    """``1 - 1/LOF`` of each ``train`` wafer within its own class, fit on the class's ``ref``
    wafers, clipped to [0, 1]."""
    from sklearn.neighbors import LocalOutlierFactor

    out = np.full(len(x), np.nan)
    rng = np.random.default_rng(cfg.seed + 3)
    for c in range(k):
        members = np.flatnonzero(train & (y == c))
        fit = np.flatnonzero(ref & (y == c))
        if len(fit) > cfg.density_max_fit:
            fit = np.sort(rng.choice(fit, cfg.density_max_fit, replace=False))
        lof = LocalOutlierFactor(n_neighbors=min(cfg.lof_neighbors, len(fit) - 1), novelty=True).fit(x[fit])
        factor = np.empty(len(members))
        in_fit = np.isin(members, fit)
        factor[in_fit] = -lof.negative_outlier_factor_[np.searchsorted(fit, members[in_fit])]
        if (~in_fit).any():
            factor[~in_fit] = -lof.score_samples(x[members[~in_fit]])
        out[members] = np.clip(1.0 - 1.0 / np.maximum(factor, 1e-9), 0.0, 1.0)
    return out


def clean_labels(
    features: np.ndarray, labels: pd.Series, cfg: CleanConfig, file: str = "<features>"
) -> CleanResult:
    """Score every wafer and decide its verdict; ``labels`` holds each wafer's label list."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(cfg.threads):
        return _clean_labels(features, labels, cfg, file)


def _clean_labels(features: np.ndarray, labels: pd.Series, cfg: CleanConfig, file: str) -> CleanResult:
    n = len(features)
    if n == 0:
        raise WaferSageError(file, "no wafers to clean")
    bad = ~np.isfinite(features).all(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise WaferSageError(
            file,
            "features are NaN or infinite (a map with no on-wafer die?)",
            f"{int(bad.sum())} wafer(s)",
            row=i,
        )
    given = label_keys(labels, cfg.combo_min_count)
    labelled = np.array([g is not None for g in given])
    if not labelled.any():
        raise WaferSageError(file, "all wafers are unlabelled; nothing to clean against")
    counts = pd.Series(given[labelled]).value_counts()
    keys = sorted(k for k, c in counts.items() if c >= cfg.min_class_size)
    notes = [
        f"class {k!r} has {c} wafer(s) < min_class_size {cfg.min_class_size}: flagged unscored"
        for k, c in counts.items()
        if c < cfg.min_class_size
    ]
    if len(keys) < 2:
        raise WaferSageError(
            file, "need at least two classes to clean", f"classes with >= {cfg.min_class_size} wafers: {keys}"
        )
    index = {k: i for i, k in enumerate(keys)}
    y = np.array([index.get(g, -1) if g is not None else -1 for g in given])
    train = y >= 0
    kk = len(keys)
    x = standardise(features.astype(np.float64))

    first = oof_probs(x, y, train, kk, cfg)
    ref = prune(first, y, train, cfg) if cfg.refit else train
    probs = oof_probs(x, y, train, kk, cfg, fit=ref) if cfg.refit else first
    votes = knn_votes(x, y, ref, kk, cfg)
    dist, which = cluster_distances(x, y, ref, kk, cfg)
    dens = density_scores(x, y, train, ref, kk, cfg)

    rows = np.arange(n)
    yi = np.where(train, y, 0)
    nan = np.full(n, np.nan)
    own = dist[rows, yi]
    other = np.where(np.arange(kk)[None, :] == yi[:, None], np.inf, dist).min(1)
    scores = {
        "classifier": np.where(train, 1.0 - probs[rows, yi], nan),
        "knn": np.where(train, 1.0 - votes[rows, yi], nan),
        "cluster": np.where(train, own / np.maximum(own + other, 1e-12), nan),
        "density": dens,
    }
    w = {s: float(cfg.weights.get(s, 0.0)) for s in SCORES}
    noise = sum(w[s] * scores[s] for s in SCORES) / sum(w.values())

    blend = (probs + votes) / 2
    sugg_i = blend.argmax(1)
    conf = blend[rows, sugg_i]
    keys_arr = np.array(keys, dtype=object)
    suggested = keys_arr[sugg_i]
    confident = (conf >= cfg.relabel_confidence) & (suggested != MIXED)
    verdict = np.full(n, "flag", dtype=object)
    verdict[train & (noise < cfg.flag_threshold)] = "keep"
    relabel = confident & (~train | ((noise >= cfg.flag_threshold) & (sugg_i != yi)))
    verdict[relabel] = "relabel"
    suggested = np.where(verdict == "keep", given, suggested)

    final_key = np.where(verdict == "keep", given, np.where(verdict == "relabel", suggested, None))
    final_i = np.array([index.get(k, -1) if k is not None else -1 for k in final_key])
    has = final_i >= 0
    fi = np.where(has, final_i, 0)
    d_final = dist[rows, fi]
    cluster_id = np.where(has, fi * cfg.kmeans_per_label + which[rows, fi], -1)
    tag = np.full(n, None, dtype=object)
    for c in range(kk):
        m = has & (final_i == c)
        if m.any():
            cut = np.quantile(d_final[m], cfg.typical_quantile)
            tag[m] = np.where(d_final[m] <= cut, "typical", "hard")
    return CleanResult(
        keys=keys,
        given_key=given,
        scorable=train,
        probs=first,
        pruned=ref,
        scores=scores,
        noise_score=noise,
        verdict=verdict,
        suggested=suggested,
        confidence=conf,
        cluster_id=cluster_id.astype(np.int64),
        tag=tag,
        final_key=final_key,
        notes=notes,
    )


def cleanlab_issues(probs: np.ndarray, y: np.ndarray, filter_by: str = "prune_by_noise_rate") -> np.ndarray:
    """Cleanlab's confident-learning baseline: a boolean label-issue mask from out-of-fold
    probabilities (rows with class ``y``, all classes present); ``filter_by`` is cleanlab's. One
    process: the result does not depend on it, and forking copies the probabilities per worker."""
    from cleanlab.filter import find_label_issues

    p = np.clip(probs, 1e-6, None)
    p = p / p.sum(1, keepdims=True)
    issues = find_label_issues(labels=y, pred_probs=p, filter_by=filter_by, n_jobs=1)
    return np.asarray(issues, dtype=bool)


def cleanlab_flags(
    res: CleanResult, probs: np.ndarray | None = None, filter_by: str = "prune_by_noise_rate"
) -> np.ndarray:
    """The baseline's verdict on every wafer, like ours where it cannot score: cleanlab on
    ``probs`` (default: the first-pass probabilities) of the scorable wafers, every other wafer
    flagged."""
    probs = res.probs if probs is None else probs
    flags = np.ones(len(res.given_key), dtype=bool)
    s = res.scorable
    y = np.array([res.keys.index(k) for k in res.given_key[s]])
    flags[s] = cleanlab_issues(probs[s], y, filter_by)
    return flags


def detection_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of a boolean detection against the ground truth."""
    tp = float((pred & truth).sum())
    precision = tp / max(float(pred.sum()), 1.0)
    recall = tp / max(float(truth.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}
