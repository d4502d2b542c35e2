"""Geometric features on hand-made maps: values where the geometry is obvious, NaN for no die."""

import numpy as np
import pandas as pd
from factories import disc, with_center

from wafersage.wafers.encoding import FAIL, OFF
from wafersage.wafers.features import COLUMNS, geometric_features


def _table(maps: list[np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rows": [m.shape[0] for m in maps],
            "cols": [m.shape[1] for m in maps],
            "map": [m.tobytes() for m in maps],
        }
    )


def _edge_arc(n: int = 32) -> np.ndarray:
    m = disc(n)
    yy, xx = np.mgrid[:n, :n]
    c = n / 2
    r = np.hypot(xx + 0.5 - c, yy + 0.5 - c) / c
    m[(m != OFF) & (r > 0.8) & (xx > c) & (yy < c)] = FAIL  # upper right edge (about 1:30)
    return m


def test_columns_and_shapes_grouped_by_size():
    maps = [disc(32), with_center(32), disc(24), _edge_arc(32)]
    f = geometric_features(_table(maps))
    assert list(f.columns) == list(COLUMNS)
    assert len(f) == 4 and not f.isna().any().any()


def test_center_blob_has_high_center_density_and_one_component():
    f = geometric_features(_table([with_center(32), disc(32)]))
    c, clean = f.iloc[0], f.iloc[1]
    assert c["dens_center"] > 0.4 and c["radial_0"] == 1 and c["dens_edge"] == 0 and c["dens_middle"] == 0
    assert clean["fail_frac"] == 0 and clean["yield"] == 1 and clean["comp_count"] == 0
    assert c["comp_count"] == 1 and c["comp_area"] == c["fail_frac"]
    assert c["comp_r"] < 0.1 and c["comp_ecc"] < 0.3


def test_edge_arc_is_at_the_edge_in_one_sector_range():
    f = geometric_features(_table([_edge_arc(32)])).iloc[0]
    assert f["dens_edge"] > 0.2 and f["dens_center"] == 0
    assert 0 < f["edge_coverage"] < 0.5 and f["edge_sector_min"] == 0
    assert 20 < f["comp_clock_deg"] < 70  # clockwise from 12: the upper right
    assert f["comp_mean_r"] > 0.8


def test_scratch_is_elongated():
    m = disc(32)
    for k in range(6, 26):
        m[k, k] = FAIL
    f = geometric_features(_table([m])).iloc[0]
    assert f["comp_elong"] > 5 and f["comp_ecc"] > 0.95


def test_map_without_on_wafer_die_gives_nan():
    empty = np.zeros((16, 16), dtype=np.uint8)
    f = geometric_features(_table([empty, disc(16)]))
    assert f.iloc[0].drop("n_on").isna().all() and f.iloc[0]["n_on"] == 0
    assert not f.iloc[1].isna().any()
