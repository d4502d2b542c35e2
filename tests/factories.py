"""Small hand-made wafer maps and raw tables for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wafersage.wafers import taxonomy
from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.rawtable import decode_map, new_table
from wafersage.wafers.synthetic import SyntheticConfig, generate

#: A small die table: ``die_table_example().to_csv(DIE_TABLE_EXAMPLE, index=False)``, run in tests/
#: after ``from factories import *`` (the same again rewrites it).
DIE_TABLE_EXAMPLE = Path(__file__).parent / "data" / "die_table_example.csv"
#: The synthetic wafers it holds: five small grids, two of them mixed-type, one ``none``.
DIE_TABLE_EXAMPLE_CONFIG = SyntheticConfig(
    n_wafers=5, seed=5, size_min=8, size_max=16, size_median=12, mixed_fraction=0.3
)


def disc(n: int = 32) -> np.ndarray:
    """A round wafer of pass dies on an n x n grid."""
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    m = np.full((n, n), OFF, dtype=np.uint8)
    m[(yy - c) ** 2 + (xx - c) ** 2 <= (n / 2) ** 2] = PASS
    return m


def with_center(n: int = 32) -> np.ndarray:
    """A disc with a central blob of fail dies."""
    m = disc(n)
    c = n // 2
    m[c - 3 : c + 3, c - 3 : c + 3] = FAIL
    return m


def raw_table(n_per_class: int = 2, size: int = 24) -> pd.DataFrame:
    """A valid raw table with every class present."""
    rec: dict[str, list] = {k: [] for k in ("wafer_id", "source", "lot_id", "rows", "cols", "map", "labels")}
    i = 0
    for cls in taxonomy.classes():
        for _ in range(n_per_class):
            m = disc(size)
            if cls != "none":
                m[size // 2, 2 : size - 2 : 2] = FAIL
            rec["wafer_id"].append(f"w{i:04d}")
            rec["source"].append("test")
            rec["lot_id"].append(f"lot{i // 5}")
            rec["rows"].append(size)
            rec["cols"].append(size)
            rec["map"].append(m.tobytes())
            rec["labels"].append([cls])
            i += 1
    return new_table(rec)


def die_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """A raw table as a die table: one row an on-wafer die (``lot_id, wafer_id, x, y, bin, label``),
    bin 1 for a pass die and 2..7 (by position) for a fail die, labels joined with ``+``."""
    parts = []
    for rec in raw.itertuples():
        m = decode_map(rec.map, rec.rows, rec.cols)
        y, x = np.nonzero(m != OFF)
        bins = np.where(m[y, x] == PASS, 1, 2 + (3 * x + y) % 6)
        cols = {"lot_id": rec.lot_id, "wafer_id": rec.wafer_id, "x": x, "y": y, "bin": bins}
        parts.append(pd.DataFrame({**cols, "label": "+".join(rec.labels)}))
    return pd.concat(parts, ignore_index=True)


def die_table_example() -> pd.DataFrame:
    """The die table of ``DIE_TABLE_EXAMPLE``."""
    return die_rows(generate(DIE_TABLE_EXAMPLE_CONFIG))


#: The worked example of a fab's own taxonomy (README): a die table whose classes include one
#: outside WM-811K's nine (``Spiral``), ``custom_classes_example().to_csv(CUSTOM_CLASSES_EXAMPLE,
#: index=False)`` rewrites it. 30 wafers a class in 15 lots of 10, each lot two of every class (so
#: every split holds every class): enough for the clean gate's 5 kept wafers a class, small enough for
#: the fast params.
CUSTOM_CLASSES_EXAMPLE = Path(__file__).parent / "data" / "custom_classes.csv"
#: Its taxonomy: params ``taxonomy`` for it (also in the README's command).
CUSTOM_TAXONOMY = {
    "classes": ["none", "Center", "Edge-Ring", "Scratch", "Spiral"],
    "synonyms": {"none": ["normal"], "Edge-Ring": ["edgering", "edge_ring"], "Spiral": ["swirl"]},
}
CUSTOM_PER_CLASS = 30


def spiral_map(rng: np.random.Generator, n: int) -> np.ndarray:
    """An ``n`` x ``n`` disc with an Archimedean spiral arm of fail dies from near the centre
    outwards (random phase and turn direction) over a light random background."""
    m = disc(n)
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    r = np.hypot(yy - c, xx - c) / (n / 2)
    theta = np.arctan2(yy - c, xx - c)
    turns = rng.uniform(1.2, 1.8)
    phase = rng.uniform(0, 2 * np.pi)
    sign = 1 if rng.random() < 0.5 else -1
    # distance (in radius units) from the arm r = (sign * theta + phase) / (2 pi turns), every winding
    arm = ((sign * theta + phase) % (2 * np.pi)) / (2 * np.pi * turns)
    gap = 1 / turns
    d = np.abs(((r - arm + gap / 2) % gap) - gap / 2)
    on = m != OFF
    fail = on & (r >= 0.12) & (r <= 0.95) & (d < 0.07) & (rng.random((n, n)) < 0.9)
    fail |= on & (rng.random((n, n)) < 0.02)
    m[fail] = FAIL
    return m


def custom_classes_example() -> pd.DataFrame:
    """The die table of ``CUSTOM_CLASSES_EXAMPLE``: WM-811K-style Center, Edge-Ring, Scratch and
    ``none`` maps from the generator and hand-drawn Spiral maps, 14-20 dies a side."""
    mix = {"none": 1.0, "Center": 1.0, "Edge-Ring": 1.0, "Scratch": 1.0}
    cfg = SyntheticConfig(
        n_wafers=400, seed=11, class_mix=mix, mixed_fraction=0.0, noise_rate=0.0,
        size_min=14, size_max=20, size_median=17,
    )  # fmt: skip
    gen = generate(cfg)
    rng = np.random.default_rng(11)
    rec: dict[str, list] = {k: [] for k in ("wafer_id", "source", "lot_id", "rows", "cols", "map", "labels")}
    picked = [gen[gen["labels"].map(lambda v, c=c: list(v) == [c])].head(CUSTOM_PER_CLASS) for c in mix]
    maps = [(decode_map(r.map, r.rows, r.cols), list(r.labels)) for p in picked for r in p.itertuples()]
    maps += [(spiral_map(rng, int(rng.integers(16, 21))), ["Spiral"]) for _ in range(CUSTOM_PER_CLASS)]
    n_lots = CUSTOM_PER_CLASS // 2
    by_class = [rng.permutation(range(j * CUSTOM_PER_CLASS, (j + 1) * CUSTOM_PER_CLASS)) for j in range(5)]
    order = [int(ks[2 * lot + t]) for lot in range(n_lots) for ks in by_class for t in range(2)]
    order = [k for lot in range(n_lots) for k in rng.permutation(order[lot * 10 : (lot + 1) * 10])]
    for i, k in enumerate(order):
        m, labels = maps[k]
        rec["wafer_id"].append(f"w{i:03d}")
        rec["source"].append("example")
        rec["lot_id"].append(f"L{i // 10:02d}")
        rec["rows"].append(m.shape[0])
        rec["cols"].append(m.shape[1])
        rec["map"].append(m.tobytes())
        rec["labels"].append(labels)
    before = taxonomy.active()
    taxonomy.activate(CUSTOM_TAXONOMY)
    try:
        return die_rows(new_table(rec))
    finally:
        taxonomy.activate(before)
