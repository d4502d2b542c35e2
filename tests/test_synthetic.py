"""The synthetic generator: determinism, the raw contract, label noise, mixed maps, class mix."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wafersage.errors import WaferSageError
from wafersage.wafers import synthetic
from wafersage.wafers.rawtable import COLUMNS, check_table, decode_map, map_stats
from wafersage.wafers.synthetic import CLASSES, MIXED_COMBOS, SyntheticConfig, generate
from wafersage.wafers.taxonomy import CONFUSABLE, NONE


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


def test_generate_range_matches_generate(table):
    cfg = SyntheticConfig(n_wafers=1500, seed=7)
    part = synthetic.generate_range(cfg, 1490, 1600)  # clipped at n_wafers
    assert len(part) == 10
    assert part.reset_index(drop=True).equals(table.iloc[1490:].reset_index(drop=True))
    assert len(synthetic.generate_range(cfg, 1600, 1700)) == 0


def test_write_parquet_chunked_reads_back_like_write_raw(tmp_path):
    from wafersage.wafers.rawtable import read_raw, write_raw

    cfg = SyntheticConfig(n_wafers=230, seed=5)
    timings: dict[str, float] = {}
    assert synthetic.write_parquet_chunked(cfg, tmp_path / "c.parquet", chunk=100, timings=timings) == 230
    assert set(timings) == {"total_s", "wait_s"}
    write_raw(generate(cfg), tmp_path / "w.parquet")
    chunked, whole = read_raw(tmp_path / "c.parquet"), read_raw(tmp_path / "w.parquet")
    assert chunked.equals(whole)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "c.parquet").num_row_groups == 3
    # worker processes write the same file, byte for byte
    synthetic.write_parquet_chunked(cfg, tmp_path / "p.parquet", chunk=100, workers=2)
    assert (tmp_path / "p.parquet").read_bytes() == (tmp_path / "c.parquet").read_bytes()
    with pytest.raises(WaferSageError, match="no wafers"):
        synthetic.write_parquet_chunked(SyntheticConfig(n_wafers=0), tmp_path / "z.parquet")
    assert not (tmp_path / "z.parquet").exists()


@pytest.fixture(scope="module")
def clean_single():
    df = generate(SyntheticConfig(n_wafers=3000, seed=11, noise_rate=0.0, mixed_fraction=0.0))
    df["cls"] = df["true_labels"].map(lambda v: v[0])
    df["side"] = np.sqrt(df["rows"] * df["cols"])
    df["ff"] = map_stats(df)["fail_fraction"].to_numpy()
    return df


def test_class_sizes_follow_wm811k(clean_single):
    med = clean_single.groupby("cls")["side"].median()
    # WM-811K medians: none/Center ~26, Loc/Edge-Loc ~35, Scratch/Donut ~41, Edge-Ring ~53
    assert 22 <= med["none"] <= 30 and 22 <= med["Center"] <= 30
    assert 31 <= med["Loc"] <= 39 and 31 <= med["Edge-Loc"] <= 39
    assert 36 <= med["Scratch"] <= 46 and 48 <= med["Edge-Ring"] <= 58
    assert clean_single["side"].between(20, 80).all()
    mixed = generate(SyntheticConfig(n_wafers=400, seed=2, mixed_fraction=1.0))
    with_ring = mixed[mixed["true_labels"].map(lambda v: "Edge-Ring" in v)]
    assert np.median(np.sqrt(with_ring["rows"] * with_ring["cols"])) > 45  # a mix takes the largest


def test_background_falls_with_die_area(clean_single):
    none = clean_single[clean_single["cls"] == "none"]
    small, large = none[none["side"] <= 26]["ff"], none[none["side"] >= 40]["ff"]
    assert len(small) > 50 and len(large) > 20
    # WM-811K none maps: median fail fraction 0.165 below side 28, 0.056 at 40-60
    assert 0.10 < small.median() < 0.22 and large.median() < 0.09
    for raw, side in zip(none["pattern_params"], none["side"], strict=True):
        bg = json.loads(raw)["background"]
        ref = min(1.0, synthetic.BACKGROUND_REF_SIDE / side)
        assert bg["fail_rate"] <= (1 - 0.78) * ref * ref + 1e-4
        assert bg["edge_fail"] <= 0.4 * ref + 1e-4


def test_loc_and_scratch_shapes(clean_single):
    df = clean_single
    for raw, cls, r, c in zip(df["pattern_params"], df["cls"], df["rows"], df["cols"], strict=True):
        if cls not in ("Loc", "Scratch"):
            continue
        (p,) = json.loads(raw)["patterns"]
        assert p["density"] >= 0.75  # compact, nearly solid clusters; continuous scratches
        if cls == "Scratch":
            assert 0.5 <= p["length"] <= 1.8
            assert p["thickness"] <= 0.8 * 2.0 / max(r, c) + 1e-4  # at most 0.8 die pitch: 1-die lines
            assert math.hypot(p["mid_x"], p["mid_y"]) <= 0.85 + 1e-3
        else:
            assert 0.2 - 1e-3 <= math.hypot(p["center_x"], p["center_y"]) <= 0.85 + 1e-3
