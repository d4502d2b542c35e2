"""Small hand-made wafer maps and raw tables for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wafersage.encoding import FAIL, OFF, PASS
from wafersage.rawtable import decode_map, new_table
from wafersage.synthetic import SyntheticConfig, generate
from wafersage.taxonomy import CLASSES

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
    for cls in CLASSES:
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
