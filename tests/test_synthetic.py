"""The synthetic generator: determinism, the raw contract, label noise, mixed maps, class mix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wafersage import synthetic
from wafersage.errors import WaferSageError
from wafersage.rawtable import COLUMNS, check_table, decode_map, map_stats
from wafersage.synthetic import MIXED_COMBOS, SyntheticConfig, generate
from wafersage.taxonomy import CLASSES, CONFUSABLE, NONE


@pytest.fixture(scope="module")
def table():
    return generate(SyntheticConfig(n_wafers=1500, seed=7))


def test_deterministic(table):
    again = generate(SyntheticConfig(n_wafers=1500, seed=7))
    assert again["map"].tolist() == table["map"].tolist()
    assert again.equals(table)
    other = generate(SyntheticConfig(n_wafers=50, seed=8))
    assert other["map"].tolist() != table["map"].iloc[:50].tolist()
    # wafer i does not depend on how many wafers are drawn
    assert generate(SyntheticConfig(n_wafers=40, seed=7))["map"].tolist() == table["map"].iloc[:40].tolist()


def test_contract(table):
    assert list(table.columns) == list(COLUMNS)
    check_table(table, "synthetic")
    assert table["wafer_id"].iloc[0] == "syn-000000"
    assert set(table["source"]) == {"synthetic"}
    assert table["lot_id"].iloc[24] == "lot-0000" and table["lot_id"].iloc[25] == "lot-0001"
    stats = map_stats(table)
    assert (stats["map_min"] == 0).all() and (stats["map_max"] <= 2).all()
    assert ((table["rows"] * table["cols"]).to_numpy() == table["map"].map(len).to_numpy()).all()
    for labels, true in zip(table["labels"], table["true_labels"], strict=True):
        assert labels and set(labels) <= set(CLASSES) and set(true) <= set(CLASSES)
        assert NONE not in labels or labels == [NONE]
    assert table["rows"].between(20, 80).all() and table["cols"].between(20, 80).all()
    m = decode_map(table["map"].iloc[0], table["rows"].iloc[0], table["cols"].iloc[0])
    assert m[m.shape[0] // 2].min() > 0  # the middle row spans the wafer
    assert m[0, 0] == 0  # corners are off-wafer


def test_noise_rate_and_structure(table):
    flipped = table["noise_flipped"].to_numpy()
    assert abs(flipped.mean() - 0.1) < 0.03
    pairs = {frozenset(p) for p in CONFUSABLE}
    for labels, true, f in zip(table["labels"], table["true_labels"], table["noise_flipped"], strict=True):
        assert f == (labels != true)
        if not f:
            continue
        if len(true) == 1 and len(labels) == 1:
            a, b = true[0], labels[0]
            assert NONE in (a, b) or frozenset((a, b)) in pairs, (true, labels)
        elif len(true) > 1:
            extra, missing = set(labels) - set(true), set(true) - set(labels)
            assert len(missing) == 1 and len(extra) <= 1
            if extra:
                assert frozenset((*extra, *missing)) in pairs


def test_no_noise():
    df = generate(SyntheticConfig(n_wafers=200, noise_rate=0.0))
    assert not df["noise_flipped"].any()
    assert (df["labels"] == df["true_labels"]).all()


def test_true_labels_match_patterns(table):
    for true, raw in zip(table["true_labels"], table["pattern_params"], strict=True):
        params = json.loads(raw)
        drawn = [p["class"] for p in params["patterns"]]
        assert drawn == ([] if true == [NONE] else true)
        for p in params["patterns"]:
            assert p["zone"] in {"center", "inner", "middle", "edge", "whole"}
            assert p["distribution"] == synthetic.DISTRIBUTION[p["class"]]
            assert p["clock"] is None or 1 <= p["clock"] <= 12
            if p["class"] in synthetic.SYMMETRIC:
                assert p["clock"] is None
            if p["class"] in synthetic.WHOLE_WAFER:
                assert p["zone"] == "whole"
            else:
                assert p["zone"] == synthetic.zone_of(p["mean_r"])
        classes = [p["class"] for p in params["patterns"]]
        if "Edge-Ring" in classes:
            assert params["patterns"][classes.index("Edge-Ring")]["zone"] == "edge"


def test_ground_truth_geometry():
    # a Center pattern's mass is at the centre; an Edge-Loc's at the edge, at its arc's clock
    df = generate(SyntheticConfig(n_wafers=300, class_mix={"Center": 1, "Edge-Loc": 1}, mixed_fraction=0))
    for raw in df["pattern_params"]:
        (p,) = json.loads(raw)["patterns"]
        if p["class"] == "Center":
            assert p["zone"] in {"center", "inner"} and p["clock"] is None
        else:
            assert p["zone"] in {"middle", "edge"}
            if p["clock"] is not None:
                d = abs((p["clock_deg"] - p["arc_center_deg"] + 180) % 360 - 180)
                assert d < 30


def test_clock_of():
    assert synthetic.clock_of(0.0, -0.5)[0] == 12
    assert synthetic.clock_of(0.5, 0.0)[0] == 3
    assert synthetic.clock_of(0.0, 0.5)[0] == 6
    assert synthetic.clock_of(-0.5, 0.0)[0] == 9


def test_mixed_maps(table):
    mixed = table[table["true_labels"].map(len) > 1]
    assert 0.06 < len(mixed) / len(table) < 0.14
    for true in mixed["true_labels"]:
        assert 2 <= len(true) <= 4
        assert tuple(true) in MIXED_COMBOS
        assert "Near-full" not in true and "Random" not in true


def test_class_mix_respected():
    mix = {"none": 2.0, "Center": 1.0, "Scratch": 1.0}
    df = generate(SyntheticConfig(n_wafers=2000, class_mix=mix, mixed_fraction=0.0, noise_rate=0.0))
    counts = df["true_labels"].map(lambda v: v[0]).value_counts(normalize=True)
    assert set(counts.index) == set(mix)
    assert abs(counts["none"] - 0.5) < 0.04 and abs(counts["Center"] - 0.25) < 0.04


def test_wm811k_preset():
    cfg = SyntheticConfig.from_dict({"class_mix": "wm811k", "n_wafers": 10})
    p = cfg.class_probs()
    assert abs(p[0] - 147431 / 172950) < 1e-9
    assert len(generate(cfg)) == 10


def test_bad_config():
    with pytest.raises(WaferSageError, match="unknown synthetic parameter"):
        SyntheticConfig.from_dict({"n_wafer": 3})
    with pytest.raises(WaferSageError, match="unknown class"):
        SyntheticConfig.from_dict({"class_mix": {"Blob": 1.0}})
    with pytest.raises(WaferSageError, match="preset"):
        SyntheticConfig.from_dict({"class_mix": "nope"})
    with pytest.raises(WaferSageError):
        SyntheticConfig.from_dict({"noise_rate": 1.5})
    cfg = SyntheticConfig.from_dict({"yield_range": [0.9, 0.95], "n_wafers": 5})
    assert cfg.yield_range == (0.9, 0.95)


def test_fail_fractions_plausible():
    df = generate(SyntheticConfig(n_wafers=400, seed=3, noise_rate=0.0, mixed_fraction=0.0))
    ff = map_stats(df)["fail_fraction"].to_numpy()
    first = df["true_labels"].map(lambda v: v[0]).to_numpy()
    assert np.median(ff[first == "none"]) < 0.25
    assert np.median(ff[first == "Near-full"]) > 0.75
