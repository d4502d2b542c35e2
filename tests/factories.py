"""Small hand-made wafer maps and raw tables for tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from wafersage.encoding import FAIL, OFF, PASS
from wafersage.rawtable import new_table
from wafersage.taxonomy import CLASSES


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
