"""The clean stage: verdicts on hand-made maps, bad input, and the metric names it writes."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from factories import disc

from wafersage.errors import WaferSageError
from wafersage.labels.cleaning import CleanConfig, clean_labels, prune
from wafersage.wafers.encoding import FAIL, OFF
from wafersage.wafers.features import geometric_features
from wafersage.wafers.rawtable import new_table, write_raw

CFG = CleanConfig(
    folds=3, min_class_size=3, classifier_trees=60, knn_k=5, lof_neighbors=5, kmeans_per_label=2
)


def _map(kind: str, rng: np.random.Generator, n: int = 28) -> np.ndarray:
    m = disc(n)
    on = m != OFF
    m[on & (rng.random(m.shape) < 0.03)] = FAIL
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(xx + 0.5 - n / 2, yy + 0.5 - n / 2) / (n / 2)
    if kind == "Center":
        m[on & (r < rng.uniform(0.25, 0.4))] = FAIL
    elif kind == "Edge-Ring":
        m[on & (r > rng.uniform(0.82, 0.9))] = FAIL
    return m


def _table(kinds: list[str], labels: list[list[str]], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    maps = [_map(k, rng) for k in kinds]
    n = len(maps)
    return new_table(
        {
            "wafer_id": [f"w{i:03d}" for i in range(n)],
            "source": ["test"] * n,
            "rows": [m.shape[0] for m in maps],
            "cols": [m.shape[1] for m in maps],
            "map": [m.tobytes() for m in maps],
            "labels": labels,
            "true_labels": [[k] for k in kinds],
            "noise_flipped": [lab != [k] for k, lab in zip(kinds, labels, strict=True)],
        }
    )


def _planted(n_per: int = 20) -> pd.DataFrame:
    kinds = ["none"] * n_per + ["Center"] * n_per + ["Edge-Ring"] * n_per
    labels = [[k] for k in kinds]
    labels[n_per + 3] = ["none"]  # a Center map labelled none
    return _table(kinds, labels)


def _clean(df: pd.DataFrame, cfg: CleanConfig = CFG):
    return clean_labels(geometric_features(df).to_numpy(), df["labels"], cfg)


def test_planted_mislabel_is_relabelled_and_clean_wafers_kept():
    df = _planted()
    res = _clean(df)
    i = 23
    assert res.verdict[i] == "relabel" and res.suggested[i] == "Center"
    assert res.noise_score[i] >= CFG.flag_threshold
    others = np.delete(np.arange(len(df)), i)
    assert (res.verdict[others] == "keep").mean() >= 0.95
    assert res.verdict[0] == "keep" and res.noise_score[0] < 0.5
    kept = res.verdict == "keep"
    assert set(res.tag[kept]) == {"typical", "hard"} and (res.cluster_id[kept] >= 0).all()


def test_refit_drops_the_planted_mislabel_from_what_the_scorers_are_fit_on():
    df = _planted()
    res = _clean(df)
    assert not res.pruned[23] and res.pruned.sum() >= len(df) - 3
    first = _clean(df, replace(CFG, refit=False))
    assert first.pruned.all()  # no refit: the scorers see every labelled wafer
    assert res.noise_score[23] >= first.noise_score[23]


def test_prune_keeps_a_class_it_would_empty():
    probs = np.array([[0.9, 0.1]] * 6 + [[0.9, 0.1]] * 3)  # the 3 'class 1' wafers all look like 0
    y = np.array([0] * 6 + [1] * 3)
    keep = prune(probs, y, np.ones(9, bool), replace(CFG, min_class_size=3))
    assert keep[6:].all()


def test_refit_finds_flipped_labels_better_than_the_first_pass_and_cleanlab():
    from sklearn.metrics import average_precision_score

    from wafersage.labels.cleaning import cleanlab_flags, detection_scores
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    df = generate(SyntheticConfig(n_wafers=1500, seed=5, noise_rate=0.1))
    cfg = CleanConfig()
    x = geometric_features(df).to_numpy()
    truth = df["noise_flipped"].to_numpy(bool)
    res = clean_labels(x, df["labels"], cfg)
    first = clean_labels(x, df["labels"], replace(cfg, refit=False))
    for score in ("cluster", "density"):  # fit on the pruned wafers, they rank the flips higher
        ap = [average_precision_score(truth, np.nan_to_num(r.scores[score], nan=1.0)) for r in (res, first)]
        assert ap[0] > ap[1] + 0.04, (score, ap)
    ours = detection_scores(res.verdict != "keep", truth)["f1"]
    cl = detection_scores(cleanlab_flags(res), truth)["f1"]
    assert ours >= 1.05 * cl, (ours, cl)


def test_single_wafer_class_is_flagged_unscored_with_a_note():
    df = _planted()
    df.at[5, "labels"] = ["Scratch"]
    res = _clean(df)
    assert res.verdict[5] in ("flag", "relabel") and np.isnan(res.noise_score[5])
    assert any("'Scratch' has 1 wafer" in n for n in res.notes)


def test_mixed_labels_are_scored_not_dropped():
    df = _planted()
    for i in (40, 41, 42, 43):
        df.at[i, "labels"] = ["Center", "Edge-Ring"]
    res = _clean(df)
    assert "mixed" in res.keys and len(res.verdict) == len(df)


def test_all_unlabelled_is_a_clear_error():
    df = _planted()
    df["labels"] = [[] for _ in range(len(df))]
    with pytest.raises(WaferSageError, match="all wafers are unlabelled"):
        _clean(df)


def test_nan_features_name_the_row():
    x = geometric_features(_planted()).to_numpy().copy()
    x[7, 3] = np.nan
    with pytest.raises(WaferSageError, match="row 7: features are NaN"):
        clean_labels(x, _planted()["labels"], CFG)


def test_one_class_only_is_a_clear_error():
    df = _planted()
    df["labels"] = [["none"] for _ in range(len(df))]
    with pytest.raises(WaferSageError, match="need at least two classes"):
        _clean(df)


def test_bad_params_are_one_line_errors():
    with pytest.raises(WaferSageError, match="weights"):
        CleanConfig.from_dict({"weights": {"bogus": 1.0}})


PARAMS = {
    "folds": 3,
    "min_class_size": 3,
    "classifier_trees": 60,
    "knn_k": 5,
    "lof_neighbors": 5,
    "kmeans_per_label": 2,
    "plot_points": 60,
    "review_count": 5,
    "min_kept_per_class": 0,
}


@pytest.fixture
def stage_env(tmp_path, monkeypatch, repo_root):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    params = {
        **PARAMS,
        "suite": str(repo_root / "expectations/clean.json"),
        "class_suite": str(repo_root / "expectations/clean_classes.json"),
    }
    return tmp_path, params


@pytest.mark.slow
def test_stage_writes_table_metrics_plot_and_review(stage_env):
    from wafersage.stages import clean as stage

    tmp, params = stage_env
    raw = tmp / "raw.parquet"
    write_raw(_planted(), raw)
    m = stage.run(params, raw, tmp / "labels.parquet", tmp / "metrics.json", tmp / "reports")
    written = json.loads((tmp / "metrics.json").read_text())
    for key in ("kept_fraction", "flagged", "relabelled", "per_class"):
        assert key in written
    for key in ("noise_detection", "noise_detection_cleanlab"):
        assert set(written[key]) == {"precision", "recall", "f1"}
    assert written["noise_detection"]["recall"] == 1.0
    assert set(written["per_class"]["Center"]) == {"kept", "flagged", "relabelled", "kept_pool"}
    assert written["per_class"]["Donut"] == {"kept": 0, "flagged": 0, "relabelled": 0, "kept_pool": 0}
    table = pd.read_parquet(tmp / "labels.parquet")
    assert len(table) == 60 and set(table["verdict"]) <= {"keep", "flag", "relabel"}
    assert table.loc[23, "kept_labels"].tolist() == ["Center"]
    assert "data:image/png;base64," in (tmp / "reports/review.html").read_text()
    emb = pd.read_csv(tmp / "reports/embedding.csv")
    assert list(emb.columns) == ["wafer_id", "x", "y", "label", "verdict"]
    assert len(emb) == 60 - m["test_as_given"] and m["test_as_given"] > 0  # test wafers are not cleaned
    assert m["kept_fraction"] == written["kept_fraction"]


def test_empty_class_below_minimum_fails_the_gate_and_writes_nothing(stage_env):
    from wafersage.stages import clean as stage

    tmp, params = stage_env
    raw = tmp / "raw.parquet"
    write_raw(_planted(), raw)
    out = tmp / "labels.parquet"
    with pytest.raises(WaferSageError, match=r"Donut 0<1"):
        stage.run({**params, "min_kept_per_class": 1}, raw, out, tmp / "metrics.json", tmp / "reports")
    assert not out.exists() and not Path(tmp / "metrics.json").exists()
