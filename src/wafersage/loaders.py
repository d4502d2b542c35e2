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

Every file is untrusted: :class:`Limits` caps map sides and decompressed bytes, and shapes are read
from headers (``.npy`` in ``.npz``, PNG ``IHDR``) before anything is allocated or decoded.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.errors import WaferSageError
from wafersage.rawtable import (
    MAX_SIDE,
    MIN_SIDE,
    check_labels,
    check_map,
    check_max_side,
    check_table,
    new_table,
    npy_header,
)
from wafersage.safe_pickle import DEFAULT_MAX_BYTES, safe_load
from wafersage.taxonomy import MIXEDWM38_ORDER

SOURCES: tuple[str, ...] = (
    "synthetic",
    "wm811k",
    "wm811k-processed",
    "mixedwm38",
    "mixedwm38-processed",
    "png-folder",
)

#: Grayscale PNG conventions: the set of pixel values -> the encoding it is read with.
PNG_ENCODINGS: tuple[tuple[frozenset[int], str], ...] = (
    (frozenset({0, 1, 2}), "canonical"),
    (frozenset({0, 128, 255}), "processed"),
)
LABELS_CSV = "labels.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def load(source: str, path: str | Path, limits: Limits | None = None) -> pd.DataFrame:
    """Load ``path`` as ``source`` into a checked raw table (one row a wafer)."""
    limits = limits or DEFAULT_LIMITS
    path = Path(path)
    if source == "synthetic":
        raise WaferSageError(
            path, "source 'synthetic' is generated, not loaded", "use the synthetic generator"
        )
    if source not in _LOADERS:
        raise WaferSageError(path, "unknown source", f"{source!r}; expected one of {', '.join(SOURCES)}")
    if not path.exists():
        raise WaferSageError(path, "file not found")
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
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WaferSageError(file, "not a readable PNG", detail, row) from None
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
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WaferSageError(csv, "not a readable CSV", detail) from None
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


_LOADERS: dict[str, Callable[[Path, Limits], pd.DataFrame]] = {
    "wm811k": load_wm811k,
    "wm811k-processed": load_wm811k_processed,
    "mixedwm38": load_mixedwm38,
    "mixedwm38-processed": load_mixedwm38_processed,
    "png-folder": load_png_folder,
}
