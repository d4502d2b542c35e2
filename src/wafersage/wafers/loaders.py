"""Loaders from every supported source into the canonical raw table (``rawtable.COLUMNS``).

Each loader checks every map (``rawtable.check_map``) and label list (``rawtable.check_labels``)
and the finished table (``rawtable.check_table``); bad input raises a one-line ``WaferSageError``
naming the file, the row (0-based position in the source) and the rule.

Sources and their ``path``:

- ``wm811k``: the original ``LSWMD.pkl`` (maps 0/1/2, labels as nested arrays, lot names).
- ``wm811k-processed``: a preprocessed pickle (maps 0/128/255, ``failureType``) or a folder of them.
- ``mixedwm38``: the original ``.npz`` (``arr_0`` maps 0/1/2/3, ``arr_1`` one-hot labels).
- ``mixedwm38-processed``: a preprocessed pickle (maps 0/128/255, ``label`` one-hot) or a folder.
- ``png-folder``: a folder of grayscale PNGs with ``labels.csv`` (``file,labels[,lot_id,wafer_id]``).
- ``die-table``: a CSV or Parquet table (or a folder of them) with one row a die: ``lot_id, wafer_id,
  x, y, bin`` and an optional per-wafer label column, or a labels file (:class:`DieTableOptions`).
  A wafer's map is the bounding box of its dies (x a column, y a row, offset by the minimum);
  unlisted dies are off-wafer, listed ones pass (a bin in ``pass_bins``) or fail.

Every file is untrusted: :class:`Limits` caps map sides and decompressed bytes, and shapes are read
from headers (``.npy`` in ``.npz``, PNG ``IHDR``, a die table's coordinates) before anything is
allocated or decoded.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from wafersage.errors import WaferSageError
from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.rawtable import (
    MAX_SIDE,
    MIN_SIDE,
    check_labels,
    check_map,
    check_max_side,
    check_table,
    new_table,
    npy_header,
)
from wafersage.wafers.safe_pickle import DEFAULT_MAX_BYTES, safe_load
from wafersage.wafers.taxonomy import MIXEDWM38_ORDER

SOURCES: tuple[str, ...] = (
    "synthetic",
    "wm811k",
    "wm811k-processed",
    "mixedwm38",
    "mixedwm38-processed",
    "png-folder",
    "die-table",
)

#: Grayscale PNG conventions: the set of pixel values -> the encoding it is read with.
PNG_ENCODINGS: tuple[tuple[frozenset[int], str], ...] = (
    (frozenset({0, 1, 2}), "canonical"),
    (frozenset({0, 128, 255}), "processed"),
)
LABELS_CSV = "labels.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: A die table's required columns (one row a die) and the files a die-table folder is read from.
DIE_COLUMNS = ("lot_id", "wafer_id", "x", "y", "bin")
DIE_TABLE_SUFFIXES = (".csv", ".parquet")
#: How one cell joins the labels of a mixed map: ``Center+Loc`` or ``Center;Loc``.
LABEL_SEPARATOR = re.compile(r"[+;]")
#: Floats above this are not exact integers.
MAX_EXACT_FLOAT = 2.0**53


@dataclass(frozen=True)
class Limits:
    """Caps on untrusted input (``ingest.max_die_side``, ``ingest.max_decompressed_bytes``)."""

    max_die_side: int = MAX_SIDE
    max_decompressed_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_params(cls, params: dict[str, Any], file: str | Path = "params.yaml") -> Limits:
        """The limits in an ``ingest`` params section (defaults where unset), checked."""
        side = check_max_side(params.get("max_die_side", MAX_SIDE), file)
        cap = params.get("max_decompressed_bytes", DEFAULT_MAX_BYTES)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
            raise WaferSageError(file, "max_decompressed_bytes must be a positive integer", repr(cap))
        return cls(max_die_side=side, max_decompressed_bytes=cap)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class DieTableOptions:
    """How source ``die-table`` reads a table (``ingest.die_table``): the bins that pass (every
    other bin fails), the per-wafer label column (``None``: none; absent from a table: unlabelled)
    and a labels file (CSV ``wafer_id,labels``) instead of that column."""

    pass_bins: tuple[int, ...] = (1,)
    label_column: str | None = "label"
    labels_file: Path | None = None

    @classmethod
    def from_params(cls, params: Any, file: str | Path = "params.yaml") -> DieTableOptions:
        """The options in an ``ingest.die_table`` section (``None``: the defaults), checked."""
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise WaferSageError(file, "ingest.die_table must be a mapping", repr(params))
        unknown = sorted(map(str, set(params) - {f.name for f in fields(cls)}))
        if unknown:
            raise WaferSageError(file, "unknown key in ingest.die_table", ", ".join(unknown))
        bins = params.get("pass_bins", list(cls.pass_bins))
        if not isinstance(bins, list) or not bins or not all(_is_int(b) for b in bins):
            raise WaferSageError(file, "ingest.die_table.pass_bins must be a list of integers", repr(bins))
        column = params.get("label_column", cls.label_column)
        if column is not None and (not isinstance(column, str) or not column or column in DIE_COLUMNS):
            raise WaferSageError(
                file, "ingest.die_table.label_column must be a new column or null", repr(column)
            )
        labels = params.get("labels_file")
        if labels is not None and (not isinstance(labels, str) or not labels):
            raise WaferSageError(file, "ingest.die_table.labels_file must be a path or null", repr(labels))
        return cls(tuple(bins), column, None if labels is None else Path(labels))


DEFAULT_DIE_TABLE = DieTableOptions()


def load(
    source: str, path: str | Path, limits: Limits | None = None, die_table: DieTableOptions | None = None
) -> pd.DataFrame:
    """Load ``path`` as ``source`` into a checked raw table (one row a wafer); ``die_table``: how
    source ``die-table`` reads it."""
    limits = limits or DEFAULT_LIMITS
    path = Path(path)
    if source == "synthetic":
        raise WaferSageError(
            path, "source 'synthetic' is generated, not loaded", "use the synthetic generator"
        )
    if source not in SOURCES:
        raise WaferSageError(path, "unknown source", f"{source!r}; expected one of {', '.join(SOURCES)}")
    if not path.exists():
        raise WaferSageError(path, "file not found")
    if source == "die-table":
        df = load_die_table(path, limits, die_table or DEFAULT_DIE_TABLE)
    else:
        df = _LOADERS[source](path, limits)
    check_table(df, path, limits.max_die_side)
    return df


# --- helpers ---------------------------------------------------------------------------------


def _stem(path: Path) -> str:
    """``val_data.pkl.xz`` -> ``val_data``."""
    name = path.name
    for suffix in (".xz", ".gz", ".bz2", ".pkl", ".pickle", ".npz"):
        name = name.removesuffix(suffix)
    return name


def _pickles(path: Path) -> list[Path]:
    """``path`` itself, or the pickles in folder ``path`` in name order."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and ".pkl" in p.name)
    if not files:
        raise WaferSageError(path, "no pickles (*.pkl*) in folder")
    return files


def _frame(path: Path, needed: Iterable[str], limits: Limits) -> pd.DataFrame:
    obj = safe_load(path, max_bytes=limits.max_decompressed_bytes)
    if not isinstance(obj, pd.DataFrame):
        raise WaferSageError(path, "pickle is not a pandas DataFrame", type(obj).__name__)
    missing = [c for c in needed if c not in obj.columns]
    if missing:
        raise WaferSageError(path, "missing columns", ", ".join(missing))
    return obj


def _maps(
    maps: Iterable[Any], encoding: str, file: Path, limits: Limits
) -> tuple[list[bytes], list[int], list[int]]:
    blobs, rows, cols = [], [], []
    for i, arr in enumerate(maps):
        m = check_map(arr, encoding, file, i, limits.max_die_side)
        blobs.append(m.tobytes())
        rows.append(m.shape[0])
        cols.append(m.shape[1])
    return blobs, rows, cols


def _is_missing(value: Any) -> bool:
    """None, NaN or pd.NA (a scalar), never an array."""
    return value is None or (
        not isinstance(value, str | bytes) and np.ndim(value) == 0 and bool(pd.isna(value))
    )


def _index_text(value: Any, row: int) -> str:
    """LSWMD's float ``waferIndex`` as text: ``3.0`` -> ``3``; missing -> ``r{row}``."""
    if _is_missing(value):
        return f"r{row}"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(f)) if f.is_integer() else str(value)


def _onehot_labels(onehot: Any, file: Path) -> list[list[str]]:
    """MixedWM38 one-hot rows (in ``MIXEDWM38_ORDER``) -> label lists; all zero = ``["none"]``."""
    try:
        a = np.asarray(onehot, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise WaferSageError(file, "label is not an 8-long one-hot", str(exc).splitlines()[0]) from None
    if a.ndim != 2 or a.shape[1] != len(MIXEDWM38_ORDER):
        raise WaferSageError(file, "label is not an 8-long one-hot", f"shape {a.shape}")
    bad = ~np.isin(a, (0.0, 1.0)).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise WaferSageError(file, "label one-hot values must be 0/1", repr(a[i].tolist()), i)
    names = np.array(MIXEDWM38_ORDER)
    out = []
    for i, row in enumerate(a.astype(bool)):
        out.append(check_labels(names[row].tolist() or ["none"], file, i))
    return out


def _concat(tables: list[pd.DataFrame]) -> pd.DataFrame:
    return tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)


def _is_int(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _reason(exc: BaseException) -> str:
    """An exception's first line (its type where it has no text)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_csv(file: Path, **kw: Any) -> pd.DataFrame:
    """A CSV as text cells (an empty cell is ``""``); an unreadable one is a one-line error."""
    try:
        return pd.read_csv(file, dtype=str, keep_default_na=False, **kw)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise WaferSageError(file, "not a readable CSV", _reason(exc)) from None


# --- WM-811K ---------------------------------------------------------------------------------


def _lswmd_label(value: Any, file: Path, row: int) -> list[str]:
    """LSWMD's ``failureType``: ``[['Center']]``, an empty array (unlabelled) or a plain string."""
    if _is_missing(value):
        return []
    names = [value] if isinstance(value, str) else np.asarray(value, dtype=object).ravel().tolist()
    return check_labels([n.decode() if isinstance(n, bytes) else n for n in names], file, row)


def load_wm811k(path: Path, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """The original WM-811K ``LSWMD.pkl``; wafer ids ``{lotName}-{waferIndex}`` (``#k`` appended to
    the k-th repeat, so ids stay unique and deterministic)."""
    df = _frame(path, ("waferMap", "failureType", "lotName", "waferIndex"), limits)
    blobs, rows, cols = _maps(df["waferMap"], "lswmd", path, limits)
    labels = [_lswmd_label(v, path, i) for i, v in enumerate(df["failureType"])]
    ids, lots, seen = [], [], {}
    for i, (lot, idx) in enumerate(zip(df["lotName"], df["waferIndex"], strict=True)):
        lot_id = None if _is_missing(lot) else str(lot)
        wafer = _index_text(idx, i)
        base = f"{lot_id if lot_id is not None else 'nolot'}-{wafer}"
        k = seen[base] = seen.get(base, 0) + 1
        ids.append(base if k == 1 else f"{base}#{k}")
        lots.append(lot_id)
    return new_table(
        {
            "wafer_id": ids,
            "source": ["wm811k"] * len(ids),
            "lot_id": lots,
            "rows": rows,
            "cols": cols,
            "map": blobs,
            "labels": labels,
        }
    )


def _processed_label(value: Any, file: Path, row: int) -> list[str]:
    return [] if _is_missing(value) else check_labels([str(value)], file, row)


def _load_wm811k_processed_file(path: Path, limits: Limits) -> pd.DataFrame:
    df = _frame(path, ("waferMap", "failureType"), limits)
    blobs, rows, cols = _maps(df["waferMap"], "processed", path, limits)
    labels = [_processed_label(v, path, i) for i, v in enumerate(df["failureType"].astype(object))]
    stem = _stem(path)
    n = len(blobs)
    return new_table(
        {
            "wafer_id": [f"{stem}-{i:06d}" for i in range(n)],
            "source": ["wm811k-processed"] * n,
            "rows": rows,
            "cols": cols,
            "map": blobs,
            "labels": labels,
        }
    )


def load_wm811k_processed(path: Path, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Preprocessed WM-811K pickle(s); wafer ids ``{file stem}-{position:06d}``; ``'None'`` ->
    ``none``; a missing ``failureType`` = unlabelled."""
    return _concat([_load_wm811k_processed_file(p, limits) for p in _pickles(path)])


# --- MixedWM38 -------------------------------------------------------------------------------


def _check_npz(path: Path, limits: Limits) -> None:
    """The ``arr_0``/``arr_1`` members' declared sizes and ``.npy`` headers, checked before
    ``np.load`` decompresses or allocates anything."""
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        total = sum(i.file_size for i in infos.values())
        if total > limits.max_decompressed_bytes:
            raise WaferSageError(
                path, "decompressed size over the limit", f"{total} > {limits.max_decompressed_bytes} bytes"
            )
        for name in ("arr_0.npy", "arr_1.npy"):
            if name not in infos:
                continue
            with zf.open(infos[name]) as fh:
                shape, _ = npy_header(fh, f"{path}:{name}", infos[name].file_size)
            if (
                name == "arr_0.npy"
                and len(shape) == 3
                and not all(MIN_SIDE <= d <= limits.max_die_side for d in shape[1:])
            ):
                raise WaferSageError(
                    path,
                    "map dimensions out of range",
                    f"{shape[1]}x{shape[2]}, sides must be {MIN_SIDE}..{limits.max_die_side}",
                )


def load_mixedwm38(path: Path, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """The original MixedWM38 ``.npz`` (read with ``allow_pickle=False``); wafer ids
    ``{file stem}-{position:06d}``."""
    try:
        _check_npz(path, limits)
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("arr_0", "arr_1") if k not in npz.files]
            if missing:
                raise WaferSageError(path, "missing arrays", ", ".join(missing))
            maps, onehot = npz["arr_0"], npz["arr_1"]
    except WaferSageError:
        raise
    except (
        zipfile.BadZipFile,
        ValueError,
        OSError,
        EOFError,
        KeyError,
        MemoryError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        first = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__
        raise WaferSageError(path, "not a readable .npz", detail) from None
    if maps.ndim != 3:
        raise WaferSageError(path, "arr_0 must be a stack of 2-D maps", f"shape {maps.shape}")
    if onehot.ndim != 2 or len(onehot) != len(maps):
        raise WaferSageError(
            path, "arr_1 must hold one label row per map", f"arr_0 {maps.shape}, arr_1 {onehot.shape}"
        )
    blobs, rows, cols = _maps(maps, "mixedwm38_npz", path, limits)
    labels = _onehot_labels(onehot, path)
    stem = _stem(path)
    n = len(blobs)
    return new_table(
        {
            "wafer_id": [f"{stem}-{i:06d}" for i in range(n)],
            "source": ["mixedwm38"] * n,
            "rows": rows,
            "cols": cols,
            "map": blobs,
            "labels": labels,
        }
    )


def _load_mixedwm38_processed_file(path: Path, limits: Limits) -> pd.DataFrame:
    df = _frame(path, ("waferMap", "label"), limits)
    blobs, rows, cols = _maps(df["waferMap"], "processed", path, limits)
    lengths = [np.size(v) for v in df["label"]]
    bad = [i for i, n in enumerate(lengths) if n != len(MIXEDWM38_ORDER)]
    if bad:
        raise WaferSageError(path, "label is not an 8-long one-hot", f"{lengths[bad[0]]} values", bad[0])
    labels = _onehot_labels([np.ravel(v) for v in df["label"]], path)
    stem = _stem(path)
    n = len(blobs)
    return new_table(
        {
            "wafer_id": [f"{stem}-{i:06d}" for i in range(n)],
            "source": ["mixedwm38-processed"] * n,
            "rows": rows,
            "cols": cols,
            "map": blobs,
            "labels": labels,
        }
    )


def load_mixedwm38_processed(path: Path, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Preprocessed MixedWM38 pickle(s); wafer ids ``{file stem}-{position:06d}``; multi-label."""
    return _concat([_load_mixedwm38_processed_file(p, limits) for p in _pickles(path)])


# --- PNG folder ------------------------------------------------------------------------------


def _png_size(file: Path, row: int) -> tuple[int, int]:
    """Width and height from a PNG's ``IHDR``, read before decoding; anything but a PNG raises."""
    with open(file, "rb") as fh:
        head = fh.read(24)
    if not head.startswith(PNG_SIGNATURE):
        raise WaferSageError(file, "not a PNG file", f"starts with {head[:8]!r}", row)
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise WaferSageError(file, "not a readable PNG", "no IHDR header", row)
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _read_png(file: Path, row: int, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not file.is_file():
        raise WaferSageError(file, "file not found", "listed in labels.csv", row)
    width, height = _png_size(file, row)
    side = limits.max_die_side
    if not (MIN_SIDE <= width <= side and MIN_SIDE <= height <= side):
        raise WaferSageError(
            file, "image dimensions out of range", f"{width}x{height}, sides must be {MIN_SIDE}..{side}", row
        )
    try:
        with Image.open(file, formats=["PNG"]) as img:
            if img.format != "PNG" or img.size != (width, height):
                raise WaferSageError(file, "not a PNG file", f"PIL reads {img.format} {img.size}", row)
            img.load()
            mode, arr = img.mode, np.asarray(img)
    except WaferSageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise WaferSageError(file, "not a readable PNG", _reason(exc), row) from None
    if mode in ("RGB", "RGBA") and (arr[..., :3] == arr[..., :1]).all():
        arr = arr[..., 0]  # a gray image saved as RGB
    elif mode not in ("L", "I", "I;16"):
        raise WaferSageError(file, "PNG must be grayscale", f"mode {mode}", row)
    values = frozenset(np.unique(arr).tolist())
    for allowed, encoding in PNG_ENCODINGS:
        if values <= allowed:
            return check_map(arr, encoding, file, row, limits.max_die_side)
    raise WaferSageError(
        file,
        "PNG values match no encoding",
        f"values {sorted(values)[:8]}; expected a subset of {{0,1,2}} or {{0,128,255}}",
        row,
    )


def _inside(folder: Path, name: str, csv: Path, row: int) -> Path:
    """``folder / name``, refused unless it is a relative path that stays inside ``folder``
    (after resolving ``..`` and symbolic links)."""
    if "\0" in name:
        raise WaferSageError(csv, "file name holds a NUL byte", repr(name), row)
    target = folder / name
    try:
        inside = not Path(name).is_absolute() and target.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as exc:  # a symbolic-link loop, a name too long
        raise WaferSageError(csv, "file path unreadable", f"{name!r}: {type(exc).__name__}", row) from None
    if not inside:
        raise WaferSageError(csv, "file path leaves the folder", repr(name), row)
    return target


def load_png_folder(path: Path, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """A folder with ``labels.csv`` (or that CSV itself). ``labels`` is ``;``-separated class
    names (empty = unlabelled); ``wafer_id`` defaults to the PNG's stem, ``lot_id`` to null.
    ``file`` must name a PNG inside the folder."""
    csv = path if path.is_file() else path / LABELS_CSV
    folder = csv.parent
    if not csv.is_file():
        raise WaferSageError(csv, "file not found", "a png-folder needs labels.csv")
    table = _read_csv(csv)
    missing = [c for c in ("file", "labels") if c not in table.columns]
    if missing:
        raise WaferSageError(csv, "missing columns", ", ".join(missing))
    ids, lots, blobs, rows, cols, labels = [], [], [], [], [], []
    for i, rec in enumerate(table.to_dict("records")):
        name = rec["file"].strip()
        if not name:
            raise WaferSageError(csv, "empty file name", row=i)
        m = _read_png(_inside(folder, name, csv, i), i, limits)
        names = [s.strip() for s in rec["labels"].split(";") if s.strip()]
        labels.append(check_labels(names, csv, i))
        ids.append(rec.get("wafer_id", "").strip() or Path(name).stem)
        lots.append(rec.get("lot_id", "").strip() or None)
        blobs.append(m.tobytes())
        rows.append(m.shape[0])
        cols.append(m.shape[1])
    df = new_table(
        {
            "wafer_id": ids,
            "source": ["png-folder"] * len(ids),
            "lot_id": lots,
            "rows": rows,
            "cols": cols,
            "map": blobs,
            "labels": labels,
        }
    )
    check_table(df, csv, limits.max_die_side)  # name the CSV in a duplicate-id error
    return df


# --- die table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dies:
    """The dies of every file of a die table (``frame``: file index, source row, lot, wafer, x, y,
    bin, label text), with each die's wafer (``codes``, in order of first appearance) and each
    wafer's first die."""

    files: list[Path]
    frame: pd.DataFrame
    codes: np.ndarray
    first: np.ndarray

    @classmethod
    def of(cls, files: list[Path], frames: list[pd.DataFrame]) -> _Dies:
        """The dies of ``files`` (``frames``, one a file) together."""
        frame = pd.concat(frames, ignore_index=True)
        codes = pd.factorize(frame["wafer"])[0]
        return cls(files, frame, codes, np.unique(codes, return_index=True)[1])

    def column(self, name: str) -> np.ndarray:
        """One column of ``frame``, every die's value."""
        return self.frame[name].to_numpy()

    def at(self, i: int) -> tuple[Path, int]:
        """Die ``i``'s file and source row."""
        return self.files[self.frame["file"].iat[i]], int(self.frame["row"].iat[i])

    def error(self, i: int, rule: str, detail: str) -> WaferSageError:
        """A one-line error at die ``i``, naming its wafer."""
        file, row = self.at(i)
        return WaferSageError(file, rule, f"wafer {self.frame['wafer'].iat[i]!r}: {detail}", row)

    def place(self, j: int, i: int) -> str:
        """Where die ``j`` is, seen from die ``i``: ``row 3``, or ``other.csv row 3``."""
        file, row = self.at(j)
        return f"row {row}" if file == self.at(i)[0] else f"{file.name} row {row}"


def _die_files(path: Path, labels_file: Path | None) -> list[Path]:
    """``path`` itself, or the CSV and Parquet files in folder ``path`` in name order (but the
    labels file)."""
    if path.is_file():
        if path.suffix.lower() not in DIE_TABLE_SUFFIXES:
            raise WaferSageError(path, "a die table must be .csv or .parquet", path.suffix or "no suffix")
        return [path]
    skip = labels_file.resolve() if labels_file is not None else None
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in DIE_TABLE_SUFFIXES and p.resolve() != skip
    )
    if not files:
        raise WaferSageError(path, "no die tables (*.csv, *.parquet) in folder")
    return files


def _read_parquet(file: Path, wanted: Iterable[str], limits: Limits) -> pd.DataFrame:
    """The ``wanted`` columns (those present) of a Parquet file, its uncompressed size checked
    against ``limits`` before anything is read."""
    try:
        pf = pq.ParquetFile(file)
        meta = pf.metadata
        size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if size > limits.max_decompressed_bytes:
            raise WaferSageError(
                file, "decompressed size over the limit", f"{size} > {limits.max_decompressed_bytes} bytes"
            )
        names = set(pf.schema_arrow.names)
        return pf.read(columns=[c for c in wanted if c in names]).to_pandas()
    except WaferSageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parquet failure is a bad file
        raise WaferSageError(file, "not a readable Parquet file", _reason(exc)) from None


def _texts(col: pd.Series) -> np.ndarray:
    """Cells as stripped text; a missing one (empty, None, NaN) is ``""``."""
    text = col.astype(str).str.strip().to_numpy(dtype=object)
    text[col.isna().to_numpy()] = ""
    return text


def _integers(col: pd.Series, name: str, file: Path) -> np.ndarray:
    """A column of integers (``3``, ``"3"``, ``3.0``) as int64; anything else (``1.5``, ``"a"``,
    empty, NaN, a bool) raises at its first row."""
    num = pd.to_numeric(col, errors="coerce")
    if num.dtype.kind == "i" and not num.hasnans:
        return num.to_numpy(np.int64)
    f = num.to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(f) | (f != np.round(f)) | (np.abs(f) > MAX_EXACT_FLOAT) | (num.dtype.kind == "b")
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = col.iloc[i]
        shown = value.item() if isinstance(value, np.generic) else value
        raise WaferSageError(file, f"{name} is not an integer", repr(shown), i)
    return f.astype(np.int64)


def _die_frame(file: Path, k: int, options: DieTableOptions, limits: Limits) -> pd.DataFrame:
    """The dies of die table ``file`` (the ``k``-th), checked cell by cell."""
    label = options.label_column
    wanted = (*DIE_COLUMNS, label) if label else DIE_COLUMNS
    if file.suffix.lower() == ".csv":
        df = _read_csv(file, usecols=lambda c: c in wanted, skipinitialspace=True)
    else:
        df = _read_parquet(file, wanted, limits)
    missing = [c for c in DIE_COLUMNS if c not in df.columns]
    if missing:
        raise WaferSageError(file, "missing columns", ", ".join(missing))
    has_label = label is not None and label in df.columns
    if has_label and options.labels_file is not None:
        raise WaferSageError(
            file, "labels given twice", f"column {label!r} and a labels_file; set label_column: null"
        )
    wafers = _texts(df["wafer_id"])
    if (wafers == "").any():
        raise WaferSageError(file, "missing wafer_id", row=int(np.flatnonzero(wafers == "")[0]))
    return pd.DataFrame(
        {
            "file": k,
            "row": np.arange(len(df)),
            "lot": _texts(df["lot_id"]),
            "wafer": wafers,
            "x": _integers(df["x"], "x", file),
            "y": _integers(df["y"], "y", file),
            "bin": _integers(df["bin"], "bin", file),
            "label": _texts(df[label]) if has_label else "",
        }
    )


def _check_same_on_wafer(dies: _Dies, values: np.ndarray, rule: str, shown: np.ndarray) -> None:
    """Refuse a wafer whose dies disagree on ``values``, at the first die that differs from its
    wafer's first die."""
    bad = values != values[dies.first][dies.codes]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        j = int(dies.first[dies.codes[i]])
        raise dies.error(i, rule, f"{shown[i]!r} here, {shown[j]!r} at {dies.place(j, i)}")


def _check_duplicates(dies: _Dies) -> None:
    """Refuse a die listed twice (same wafer, x and y), naming both rows."""
    x, y = dies.column("x"), dies.column("y")
    dup = pd.DataFrame({"w": dies.codes, "x": x, "y": y}).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        j = int(np.flatnonzero((dies.codes == dies.codes[i]) & (x == x[i]) & (y == y[i]))[0])
        raise dies.error(i, "duplicate die", f"x={x[i]} y={y[i]} also at {dies.place(j, i)}")


def _split_labels(text: str, file: Path, row: int) -> list[str]:
    """A cell's labels (``Center+Loc`` or ``Center;Loc``; empty: unlabelled), checked."""
    return check_labels([s.strip() for s in LABEL_SEPARATOR.split(text) if s.strip()], file, row)


def _column_labels(dies: _Dies) -> list[list[str]]:
    """Each wafer's labels from the label column: every cell text parsed once (so ``Loc+Center``
    and ``center;loc`` agree); a wafer whose dies disagree raises."""
    text_codes, texts = pd.factorize(dies.frame["label"])
    firsts = np.unique(text_codes, return_index=True)[1]
    sets: dict[tuple[str, ...], int] = {}
    set_of_text = [
        sets.setdefault(tuple(_split_labels(t, *dies.at(i))), len(sets))
        for t, i in zip(texts, firsts, strict=True)
    ]
    set_codes = np.asarray(set_of_text, dtype=np.int64)[text_codes]
    _check_same_on_wafer(
        dies, set_codes, "wafer has different labels on different dies", dies.column("label")
    )
    names = list(sets)
    return [list(names[c]) for c in set_codes[dies.first]]


def _file_labels(file: Path, wafers: list[str]) -> list[list[str]]:
    """Each wafer's labels from a labels file (CSV ``wafer_id,labels``; a wafer it omits is
    unlabelled); a wafer it names twice, or that the table lacks, raises."""
    if not file.is_file():
        raise WaferSageError(file, "file not found", "ingest.die_table.labels_file")
    table = _read_csv(file, skipinitialspace=True)
    missing = [c for c in ("wafer_id", "labels") if c not in table.columns]
    if missing:
        raise WaferSageError(file, "missing columns", ", ".join(missing))
    known, found = set(wafers), {}
    for i, (wafer, text) in enumerate(zip(table["wafer_id"].str.strip(), table["labels"], strict=True)):
        if wafer not in known:
            raise WaferSageError(file, "wafer not in the die table", repr(wafer), i)
        if wafer in found:
            raise WaferSageError(file, "duplicate wafer_id", repr(wafer), i)
        found[wafer] = _split_labels(text, file, i)
    return [found.get(w, []) for w in wafers]


def _grids(dies: _Dies, max_side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each wafer's first column and row and its grid's rows and cols; a side outside
    ``MIN_SIDE..max_side`` raises before any map is allocated."""
    g = dies.frame[["x", "y"]].groupby(dies.codes)
    lo, hi = g.min(), g.max()
    rows = hi["y"].to_numpy(np.float64) - lo["y"].to_numpy(np.float64) + 1  # float: no overflow
    cols = hi["x"].to_numpy(np.float64) - lo["x"].to_numpy(np.float64) + 1
    bad = (np.minimum(rows, cols) < MIN_SIDE) | (np.maximum(rows, cols) > max_side)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise dies.error(
            int(dies.first[k]),
            "map dimensions out of range",
            f"{rows[k]:.0f}x{cols[k]:.0f} dies, sides must be {MIN_SIDE}..{max_side}",
        )
    return lo["x"].to_numpy(), lo["y"].to_numpy(), rows.astype(np.int64), cols.astype(np.int64)


def _die_maps(
    dies: _Dies, pass_bins: tuple[int, ...], limits: Limits
) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Each wafer's canonical map (its grid OFF but for its dies, PASS or FAIL by bin), rows and cols."""
    x0, y0, rows, cols = _grids(dies, limits.max_die_side)
    x, y = dies.column("x"), dies.column("y")
    values = np.where(np.isin(dies.column("bin"), pass_bins), PASS, FAIL).astype(np.uint8)
    order = np.argsort(dies.codes, kind="stable")
    bounds = np.searchsorted(dies.codes[order], np.arange(len(rows) + 1))
    blobs = []
    for k in range(len(rows)):
        idx = order[bounds[k] : bounds[k + 1]]
        m = np.full((rows[k], cols[k]), OFF, dtype=np.uint8)
        m[y[idx] - y0[k], x[idx] - x0[k]] = values[idx]
        blobs.append(check_map(m, "canonical", *dies.at(int(dies.first[k])), limits.max_die_side).tobytes())
    return blobs, rows, cols


def load_die_table(
    path: Path, limits: Limits = DEFAULT_LIMITS, options: DieTableOptions = DEFAULT_DIE_TABLE
) -> pd.DataFrame:
    """A die table (or a folder of them), one row a die; wafer and lot ids as given (an empty lot is
    null), wafers in order of first appearance."""
    files = _die_files(path, options.labels_file)
    dies = _Dies.of(files, [_die_frame(f, k, options, limits) for k, f in enumerate(files)])
    lots = dies.column("lot")
    _check_same_on_wafer(dies, lots, "wafer_id under two lot_ids", lots)
    _check_duplicates(dies)
    wafers = dies.column("wafer")[dies.first].tolist()
    if options.labels_file is not None:
        labels = _file_labels(options.labels_file, wafers)
    else:
        labels = _column_labels(dies)
    blobs, rows, cols = _die_maps(dies, options.pass_bins, limits)
    return new_table(
        {
            "wafer_id": wafers,
            "source": ["die-table"] * len(wafers),
            "lot_id": [lot or None for lot in lots[dies.first]],
            "rows": rows.tolist(),
            "cols": cols.tolist(),
            "map": blobs,
            "labels": labels,
        }
    )


_LOADERS: dict[str, Callable[[Path, Limits], pd.DataFrame]] = {
    "wm811k": load_wm811k,
    "wm811k-processed": load_wm811k_processed,
    "mixedwm38": load_mixedwm38,
    "mixedwm38-processed": load_mixedwm38_processed,
    "png-folder": load_png_folder,
}
