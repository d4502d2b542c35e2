"""benchmarks/clean_quality.py: cleanlab given the same refit as ours really refits."""

import importlib
from pathlib import Path

import numpy as np

from wafersage.labels.cleaning import CleanConfig, clean_labels, cleanlab_flags
from wafersage.wafers.features import geometric_features
from wafersage.wafers.synthetic import SyntheticConfig, generate

CFG = CleanConfig(folds=3, classifier_trees=40, knn_k=5, lof_neighbors=5, kmeans_per_label=2)


def test_refit_cleanlab_scores_the_probabilities_ours_refit_classifier_gives(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = importlib.import_module("clean_quality")
    df = generate(SyntheticConfig(n_wafers=600, seed=5, noise_rate=0.15))
    x = geometric_features(df).to_numpy()
    res = clean_labels(x, df["labels"], CFG)
    probs, keep = bench.refit_probs(x, res, CFG)
    s, y = res.scorable, bench.class_index(res)
    # pruned on the first pass: the rows ours refits on, fewer than all
    assert (keep == res.pruned).all() and 0 < (s & ~keep).sum() < s.sum() // 4
    # the classifier refit on them: exactly ours' classifier score, not the first pass
    np.testing.assert_allclose(1.0 - probs[s, y[s]], res.scores["classifier"][s])
    assert np.abs(probs[s] - res.probs[s]).max() > 0.1
    refit = cleanlab_flags(res, probs)
    assert (refit != cleanlab_flags(res)).sum() >= 5
    assert (refit[~s]).all()  # unscorable wafers are flagged, like ours
