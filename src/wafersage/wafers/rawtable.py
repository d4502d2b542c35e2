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
from wafersage.errors import WaferSageError
from wafersage.wafers import taxonomy
from wafersage.wafers.encoding import FAIL, OFF, to_canonical
from wafersage.wafers.taxonomy import canonical

MIN_SIDE, MAX_SIDE = 4, 512
#: The largest side ``ingest.max_die_side`` may raise ``MAX_SIDE`` to; every reader of a raw table
#: refuses rows or cols outside ``1..MAX_SIDE_LIMIT`` before decoding a map.
MAX_SIDE_LIMIT = 4096

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


def check_max_side(max_side: Any, file: str | Path = "params.yaml") -> int:
    """``max_side`` as an int in ``MIN_SIDE..MAX_SIDE_LIMIT``, or a one-line ``WaferSageError``."""
    if isinstance(max_side, bool) or not isinstance(max_side, int):
        raise WaferSageError(file, "max_die_side must be an integer", repr(max_side))
    if not MIN_SIDE <= max_side <= MAX_SIDE_LIMIT:
        raise WaferSageError(
            file, "max_die_side out of range", f"{max_side}, allowed {MIN_SIDE}..{MAX_SIDE_LIMIT}"
        )
    return max_side


def check_map(arr: Any, encoding: str, file: str | Path, row: object, max_side: int = MAX_SIDE) -> np.ndarray:
    """Return ``arr`` as a canonical uint8 2-D map (sides ``MIN_SIDE..max_side``), or raise a
    one-line ``WaferSageError``."""
    try:
        a = np.asarray(arr)
    except ValueError as exc:  # ragged nested lists
        raise WaferSageError(file, "map is ragged", str(exc).splitlines()[0], row) from None
    if a.dtype == object:
        raise WaferSageError(file, "map is ragged or not numeric", f"dtype {a.dtype}", row)
    if a.ndim != 2:
        raise WaferSageError(file, "map must be 2-D", f"shape {a.shape}", row)
    r, c = a.shape
    if not (MIN_SIDE <= r <= max_side and MIN_SIDE <= c <= max_side):
        raise WaferSageError(
            file, "map dimensions out of range", f"{r}x{c}, sides must be {MIN_SIDE}..{max_side}", row
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
    return sorted(out, key=taxonomy.class_index().__getitem__)


def npy_header(fh: Any, file: str | Path, max_bytes: int) -> tuple[tuple[int, ...], np.dtype]:
    """Read a ``.npy`` header from ``fh`` (positioned at its start) and check it before anything is
    allocated: a numeric, non-object dtype and at most ``max_bytes`` of data. Returns the shape
    and dtype; a bad header is a one-line ``WaferSageError``."""
    from numpy.lib import format as npf

    try:
        version = npf.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npf.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = npf.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # noqa: BLE001 - numpy parses the header text: any failure is a bad file
        raise WaferSageError(file, "not a readable .npy array", _first_line(exc)) from None
    if dtype.hasobject:
        raise WaferSageError(file, "not a readable .npy array", f"dtype {dtype} holds pickled objects")
    if dtype.kind not in "biuf":
        raise WaferSageError(file, "array dtype must be numeric", str(dtype))
    if any(int(d) < 0 for d in shape):
        raise WaferSageError(file, "array shape is negative", str(shape))
    n = 1
    for d in shape:
        n *= int(d)
    if n * dtype.itemsize > max_bytes:
        raise WaferSageError(
            file, "array too large", f"shape {shape} of {dtype} is {n * dtype.itemsize} bytes > {max_bytes}"
        )
    return tuple(int(d) for d in shape), dtype


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def new_table(records: dict[str, list]) -> pd.DataFrame:
    """A raw table from column lists; missing optional columns are filled with nulls."""
    n = len(records["wafer_id"])
    cols = {}
    for name in COLUMNS:
        cols[name] = records.get(name, [None] * n)
    return pd.DataFrame(cols, columns=list(COLUMNS))


def check_shapes(df: pd.DataFrame, file: str | Path, max_side: int = MAX_SIDE_LIMIT) -> None:
    """``rows`` and ``cols`` integers in ``1..max_side`` and every map ``rows * cols`` bytes (so
    :func:`decode_map` cannot fail or allocate more than the map holds)."""
    for name in ("rows", "cols"):
        col = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(col) | (col != np.round(col)) | (col < 1) | (col > max_side)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise WaferSageError(
                file, f"{name} out of range", f"{df[name].iloc[i]!r}, allowed 1..{max_side}", row=i
            )
    blobs = df["map"].to_numpy()
    not_bytes = [i for i, b in enumerate(blobs) if not isinstance(b, bytes | bytearray)]
    if not_bytes:
        raise WaferSageError(file, "map is not bytes", row=not_bytes[0])
    sizes = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
    bad = sizes != df["rows"].to_numpy(np.int64) * df["cols"].to_numpy(np.int64)
    if bad.any():
        raise WaferSageError(file, "map size != rows*cols", row=int(np.flatnonzero(bad)[0]))


def check_table(df: pd.DataFrame, file: str | Path, max_side: int = MAX_SIDE_LIMIT) -> None:
    """Table-level rules: ids present and unique, sides in ``1..max_side``, shapes consistent, at
    least one wafer."""
    if len(df) == 0:
        raise WaferSageError(file, "no wafers")
    ids = df["wafer_id"]
    if ids.isna().any():
        raise WaferSageError(file, "missing wafer_id", row=int(np.flatnonzero(ids.isna())[0]))
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise WaferSageError(file, "duplicate wafer_id", repr(ids.iloc[i]), row=i)
    check_shapes(df, file, max_side)


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
    check_shapes(df, path)
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
