"""The raw table contract (``data/raw/wafers.parquet``): one row a wafer, maps canonical."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wafersage.atomic import atomic_path
from wafersage.encoding import FAIL, OFF, to_canonical
from wafersage.errors import WaferSageError
from wafersage.taxonomy import CLASS_INDEX, canonical

MIN_SIDE, MAX_SIDE = 4, 512

SCHEMA = pa.schema(
    [
        ("wafer_id", pa.string()),
        ("source", pa.string()),
        ("lot_id", pa.string()),
        ("rows", pa.int32()),
        ("cols", pa.int32()),
        ("map", pa.binary()),
        ("labels", pa.list_(pa.string())),
        ("true_labels", pa.list_(pa.string())),
        ("noise_flipped", pa.bool_()),
        ("pattern_params", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
#: What every reader of a raw table relies on.
REQUIRED_COLUMNS = ("wafer_id", "rows", "cols", "map", "labels")


def check_map(arr: Any, encoding: str, file: str | Path, row: object) -> np.ndarray:
    """Return ``arr`` as a canonical uint8 2-D map, or raise a one-line ``WaferSageError``."""
    try:
        a = np.asarray(arr)
    except ValueError as exc:  # ragged nested lists
        raise WaferSageError(file, "map is ragged", str(exc).splitlines()[0], row) from None
    if a.dtype == object:
        raise WaferSageError(file, "map is ragged or not numeric", f"dtype {a.dtype}", row)
    if a.ndim != 2:
        raise WaferSageError(file, "map must be 2-D", f"shape {a.shape}", row)
    r, c = a.shape
    if not (MIN_SIDE <= r <= MAX_SIDE and MIN_SIDE <= c <= MAX_SIDE):
        raise WaferSageError(
            file, "map dimensions out of range", f"{r}x{c}, sides must be {MIN_SIDE}..{MAX_SIDE}", row
        )
    try:
        m = to_canonical(a, encoding)
    except ValueError as exc:
        raise WaferSageError(file, "map value outside encoding", str(exc), row) from None
    if not (m != OFF).any():
        raise WaferSageError(file, "map is empty (no on-wafer die)", "", row)
    return m


def check_labels(labels: Any, file: str | Path, row: object) -> list[str]:
    """Canonical, de-duplicated labels in taxonomy order; unknown names raise."""
    out: list[str] = []
    for name in labels:
        try:
            c = canonical(name)
        except KeyError:
            raise WaferSageError(file, "unknown label", repr(name), row) from None
        if c not in out:
            out.append(c)
    if "none" in out and len(out) > 1:
        raise WaferSageError(file, "label 'none' combined with a defect", repr(list(labels)), row)
    return sorted(out, key=CLASS_INDEX.__getitem__)


def new_table(records: dict[str, list]) -> pd.DataFrame:
    """A raw table from column lists; missing optional columns are filled with nulls."""
    n = len(records["wafer_id"])
    cols = {}
    for name in COLUMNS:
        cols[name] = records.get(name, [None] * n)
    return pd.DataFrame(cols, columns=list(COLUMNS))


def check_table(df: pd.DataFrame, file: str | Path) -> None:
    """Table-level rules: ids present and unique, shapes consistent, at least one wafer."""
    if len(df) == 0:
        raise WaferSageError(file, "no wafers")
    ids = df["wafer_id"]
    if ids.isna().any():
        raise WaferSageError(file, "missing wafer_id", row=int(np.flatnonzero(ids.isna())[0]))
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise WaferSageError(file, "duplicate wafer_id", repr(ids.iloc[i]), row=i)
    sizes = df["map"].map(len).to_numpy()
    bad = sizes != df["rows"].to_numpy() * df["cols"].to_numpy()
    if bad.any():
        raise WaferSageError(file, "map size != rows*cols", row=int(np.flatnonzero(bad)[0]))


def write_raw(df: pd.DataFrame, path: str | Path) -> None:
    """Check and write a raw table atomically as Parquet."""
    check_table(df, path)
    table = pa.Table.from_pandas(df[list(COLUMNS)], schema=SCHEMA, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_raw(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a raw table; a missing or unreadable file raises a one-line error. ``columns`` (beyond
    the required ones, read when present) keeps a large table's unused columns out of memory."""
    path = Path(path)
    if not path.exists():
        raise WaferSageError(path, "file not found")
    try:
        names = pq.read_schema(path).names
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise WaferSageError(path, "missing columns", ", ".join(missing))
        wanted = None if columns is None else [c for c in names if c in {*REQUIRED_COLUMNS, *columns}]
        table = pq.read_table(path, columns=wanted)
    except WaferSageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parquet failure is a bad file
        raise WaferSageError(path, "not a readable Parquet file", str(exc).splitlines()[0]) from None
    df = table.to_pandas(self_destruct=True)
    del table
    df["labels"] = df["labels"].map(lambda v: [] if v is None else list(v))
    return df


def decode_map(blob: bytes, rows: int, cols: int) -> np.ndarray:
    """The canonical uint8 map stored in one row."""
    return np.frombuffer(blob, dtype=np.uint8).reshape(int(rows), int(cols))


def map_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Per wafer: min and max die value, on-wafer dies and fail fraction (vectorised over the
    concatenated map bytes)."""
    sizes = df["map"].map(len).to_numpy()
    flat = np.frombuffer(b"".join(df["map"].tolist()), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    nonempty = sizes > 0
    idx = starts[nonempty]
    mins = np.full(len(df), -1, dtype=np.int64)
    maxs = np.full(len(df), -1, dtype=np.int64)
    mins[nonempty] = np.minimum.reduceat(flat, idx)
    maxs[nonempty] = np.maximum.reduceat(flat, idx)
    on = np.add.reduceat((flat != OFF).astype(np.int64), idx) if len(flat) else np.zeros(0, np.int64)
    fail = np.add.reduceat((flat == FAIL).astype(np.int64), idx) if len(flat) else np.zeros(0, np.int64)
    n_on = np.zeros(len(df), dtype=np.int64)
    n_fail = np.zeros(len(df), dtype=np.int64)
    n_on[nonempty], n_fail[nonempty] = on, fail
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n_on > 0, n_fail / np.maximum(n_on, 1), np.nan)
    return pd.DataFrame(
        {"map_min": mins, "map_max": maxs, "n_on_wafer": n_on, "fail_fraction": frac}, index=df.index
    )


def params_json(params: dict[str, Any]) -> str:
    """Pattern parameters as canonical JSON (sorted keys, so output bytes are deterministic)."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))
