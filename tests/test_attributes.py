"""Analytic attributes: hand-made maps with known geometry, and agreement with the synthetic
generator's ground truth on freshly generated wafers."""

from __future__ import annotations

import numpy as np
import pytest
from factories import disc

from wafersage.annotation.attributes import (
    agreement_summary,
    attributes_for_rows,
    truth_agreement,
    wafer_attributes,
)
from wafersage.wafers.encoding import FAIL
from wafersage.wafers.synthetic import SyntheticConfig, generate


def _blob(n: int, row: int, col: int, rad: int = 3) -> np.ndarray:
    m = disc(n)
    yy, xx = np.mgrid[:n, :n]
    m[((yy - row) ** 2 + (xx - col) ** 2 <= rad * rad) & (m > 0)] = FAIL
    return m


def test_blob_at_three_oclock_mid_radius():
    n = 40
    m = _blob(n, 20, 33)  # right of centre, r ~ 0.65
    a = wafer_attributes(m, ["Loc"])
    p = a["patterns"][0]
    assert (p["zone"], p["clock"], p["distribution"]) == ("middle", 3, "clustered")
    assert a["inferred_pattern"] == "Loc"
    assert a["n_components"] == 1 and 0.95 < p["density"] <= 1.0
    assert a["yield"] == pytest.approx(1 - a["n_fail"] / a["n_dies"], abs=1e-3)


def test_centre_blob_has_no_clock_and_opposite_side_gives_nine():
    a = wafer_attributes(_blob(40, 20, 20, 6), ["Center"])
    assert a["patterns"][0]["zone"] == "center" and a["patterns"][0]["clock"] is None
    assert a["inferred_pattern"] == "Center"
    assert wafer_attributes(_blob(40, 20, 7), ["Loc"])["patterns"][0]["clock"] == 9
    assert wafer_attributes(_blob(40, 6, 20), ["Loc"])["patterns"][0]["clock"] == 12


def test_scratch_is_a_long_thin_line_with_its_orientation():
    m = disc(48)
    for k in range(8, 40):
        m[k, k] = FAIL  # a diagonal from upper left to lower right
    a = wafer_attributes(m, ["Scratch"])
    p = a["patterns"][0]
    assert p["distribution"] == "line" and p["elongation"] > 5
    assert p["orientation_deg"] == pytest.approx(135, abs=5)  # the 4:30 - 10:30 axis
    assert a["inferred_pattern"] == "Scratch"


def test_edge_ring_covers_the_circumference():
    m = disc(40)
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 19.5, xx - 19.5) / 20
    m[(r > 0.88) & (m > 0)] = FAIL
    a = wafer_attributes(m, ["Edge-Ring"])
    p = a["patterns"][0]
    assert (p["zone"], p["distribution"]) == ("edge", "ring") and p["coverage_deg"] >= 330
    assert p["clock"] is None and a["inferred_pattern"] == "Edge-Ring"


def test_wafer_without_fails_and_full_wafer():
    a = wafer_attributes(disc(30), ["Center"])
    assert a["n_fail"] == 0 and a["yield"] == 1.0 and a["inferred_pattern"] == "none"
    assert a["patterns"][0]["separable"] is False and a["patterns"][0]["zone"] is None
    m = disc(30)
    m[m > 0] = FAIL
    full = wafer_attributes(m, ["Near-full"])
    assert full["patterns"][0]["zone"] == "whole" and full["patterns"][0]["distribution"] == "full"
    assert full["inferred_pattern"] == "Near-full"


def test_agreement_with_synthetic_ground_truth():
    """Fresh wafers (a seed the pipeline does not use), labels = truth. Single-pattern wafers:
    zone and clock agree on >= 93% of patterns; every pattern of mixed maps included >= 85%
    (the 95% goal is not reached yet: see the benchmark's per-class table)."""
    df = generate(SyntheticConfig(n_wafers=500, seed=2024, noise_rate=0.0))
    table = truth_agreement(df, attributes_for_rows(df, "true_labels"))
    single = agreement_summary(table[~table["mixed"].astype(bool)])
    every = agreement_summary(table)
    assert single["zone"] >= 0.93 and single["clock_position"] >= 0.93, single
    assert every["zone"] >= 0.85 and every["clock_position"] >= 0.85, every
    assert single["distribution"] >= 0.88 and every["pattern_type"] >= 0.6
