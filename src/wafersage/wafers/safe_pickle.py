"""A restricted unpickler for the pandas pickles the datasets ship as.

A pickle can name any importable callable and call it while loading, so ``pandas.read_pickle`` on
an untrusted file runs whatever the file says. :func:`safe_load` resolves only the globals on
:data:`ALLOWED` (the numpy/pandas constructors a pickled ``DataFrame`` of arrays, strings and
categoricals needs) and refuses every other one with a one-line ``WaferSageError`` before anything
is called. Old pandas/numpy module paths (pandas 0.x ``pandas.indexes``, ``Int64Index``, numpy 1.x
``numpy.core``) are renamed to their current homes first, so pickles written by old versions load.

Allowed constructors are not trusted with their data either: every Arrow array a pickle builds is
validated in full (offsets, lengths, UTF-8) as it is built, every categorical's codes are checked
against its categories before anything reads them, a loaded frame's block layout is verified, and
a compressed stream is cut off past ``max_bytes`` decompressed bytes.
"""

from __future__ import annotations

import _compat_pickle
import bz2
import gzip
import importlib
import lzma
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.core.internals.managers import BlockManager

from wafersage.errors import WaferSageError

#: Globals a pickle may name (after renaming): pure data constructors, no general callables.
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        # builtins / stdlib (protocol 2 pickles spell bytes as _codecs.encode(str, 'latin1'))
        ("builtins", "slice"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),
        # numpy arrays and scalars
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        # pandas frames, block managers and indexes
        ("pandas", "DataFrame"),
        ("pandas.core.frame", "DataFrame"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        # categoricals and strings (pandas >= 3 stores str columns as Arrow-backed arrays)
        ("pandas", "Categorical"),
        ("pandas", "CategoricalDtype"),
        ("pandas.core.arrays.categorical", "Categorical"),
        ("pandas.core.dtypes.dtypes", "CategoricalDtype"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas", "StringDtype"),
        ("pandas.core.arrays.string_", "StringDtype"),
        ("pandas.arrays", "StringArray"),
        ("pandas.core.arrays.string_", "StringArray"),
        ("pandas.arrays", "ArrowStringArray"),
        ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
        ("pyarrow.lib", "type_for_alias"),
        ("pyarrow.lib", "py_buffer"),
        ("pyarrow.lib", "_restore_array"),
    }
)

#: Module prefixes that moved: old prefix -> new prefix.
MODULE_RENAMES: dict[str, str] = {
    "numpy.core": "numpy._core",
    "pandas.indexes": "pandas.core.indexes",  # pandas 0.18-0.19
    "pandas.types": "pandas.core.dtypes",  # pandas 0.19
}

#: Globals that moved or were removed: (module, name) after prefix renames -> (module, name).
CLASS_RENAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("pandas.core.index", "Index"): ("pandas.core.indexes.base", "Index"),
    ("pandas.core.index", "_new_Index"): ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.index", "Int64Index"): ("pandas.core.indexes.base", "Index"),
    ("pandas.core.index", "RangeIndex"): ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.core.indexes.numeric", "Int64Index"): ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.numeric", "UInt64Index"): ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.numeric", "Float64Index"): ("pandas.core.indexes.base", "Index"),
    ("pandas.core.internals", "BlockManager"): ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals.blocks", "new_block"): ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.categorical", "Categorical"): ("pandas.core.arrays.categorical", "Categorical"),
}


#: Default cap on the bytes a compressed pickle may expand to (the largest real dataset, the
#: original LSWMD.pkl, is about 2 GB).
DEFAULT_MAX_BYTES = 8 << 30
#: How deep :func:`_check_value` follows containers (deeper nesting is refused).
_MAX_DEPTH = 32


class _UnsafeValue(Exception):
    """A constructed value that would let a later read go out of bounds."""


def _check_layout(blocks: list[tuple[Any, Any]], axes: Any) -> None:
    """Blocks ``(placement, values)`` must tile the items axis exactly and match the other axes,
    checked before pandas indexes anything with them."""
    from pandas._libs.internals import BlockPlacement

    try:
        n_items, n_rows = len(axes[0]), len(axes[-1])
    except (TypeError, IndexError) as exc:
        raise _UnsafeValue(f"frame axes unreadable: {_first_line(exc)}") from None
    seen = np.zeros(n_items, dtype=bool)
    for locs, values in blocks:
        if isinstance(locs, slice):
            start, stop, step = locs.start or 0, locs.stop, locs.step or 1
            if stop is None or step <= 0 or not 0 <= start <= stop <= n_items:
                raise _UnsafeValue("frame block placement outside its columns")
        bp = locs if isinstance(locs, BlockPlacement) else BlockPlacement(locs)
        if len(bp) > n_items:
            raise _UnsafeValue("frame block placement outside its columns")
        idx = np.asarray(bp.as_array, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_items or seen[idx].any()):
            raise _UnsafeValue("frame block placement outside its columns or overlapping")
        if len(np.unique(idx)) != idx.size:
            raise _UnsafeValue("frame block placement repeats a column")
        seen[idx] = True
        shape = getattr(values, "shape", None)
        if shape is None or shape[-1] != n_rows or (len(shape) == 2 and shape[0] != idx.size):
            raise _UnsafeValue("frame block shape does not match its axes")
        _check_value(values, 1)
    if not seen.all():
        raise _UnsafeValue("frame blocks leave columns unset")


class _CheckedBlockManager(BlockManager):
    """A ``BlockManager`` restored from state (``__setstate__``) with the state checked first."""

    def __setstate__(self, state: Any) -> None:
        try:
            inner = state[3]["0.14.1"]
            layout = [(b["mgr_locs"], b["values"]) for b in inner["blocks"]]
            axes = inner["axes"]
        except (TypeError, KeyError, IndexError) as exc:
            raise _UnsafeValue(f"frame state unreadable: {_first_line(exc)}") from None
        _check_layout(layout, axes)
        self.__class__ = BlockManager
        BlockManager.__setstate__(self, _plain(state))


class _LegacyBlockManager(BlockManager):
    """Stands in for ``BlockManager`` during unpickling: pandas < 1.0 pickled it as a bare
    ``NEWOBJ`` with no arguments, which today's constructor rejects (as pandas' own
    ``pickle_compat`` works around); its state is then checked by :class:`_CheckedBlockManager`.
    Called with blocks and axes, checks their layout and returns a plain ``BlockManager``."""

    def __new__(cls, *args: Any) -> BlockManager:  # type: ignore[misc]
        if not args:
            return BlockManager.__new__(_CheckedBlockManager, (), [], False)
        if len(args) < 2:
            raise _UnsafeValue("frame blocks without axes")
        args = _plain(args)
        blocks, axes = args[0], args[1]
        try:
            layout = [(b.mgr_locs, b.values) for b in blocks]
        except (TypeError, AttributeError) as exc:
            raise _UnsafeValue(f"frame blocks unreadable: {_first_line(exc)}") from None
        _check_layout(layout, axes)
        return BlockManager.__new__(BlockManager, *args)


def _rename(module: str, name: str) -> tuple[str, str]:
    key = (module, name)
    if key in _compat_pickle.NAME_MAPPING:  # Python 2 names (protocol < 3)
        module, name = _compat_pickle.NAME_MAPPING[key]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    for old, new in MODULE_RENAMES.items():
        if module == old or module.startswith(old + "."):
            module = new + module[len(old) :]
            break
    return CLASS_RENAMES.get((module, name), (module, name))


def _check_categorical(cat: pd.Categorical) -> None:
    codes = np.asarray(cat._ndarray)  # the stored codes, read without going through them
    if codes.dtype.kind not in "iu":
        raise _UnsafeValue(f"categorical codes have dtype {codes.dtype}")
    n = len(cat.dtype.categories)
    if codes.size and (int(codes.min()) < -1 or int(codes.max()) >= n):
        raise _UnsafeValue(f"categorical codes outside 0..{n - 1}")
    _check_value(cat.dtype.categories, 1)


def _check_frame(df: pd.DataFrame) -> None:
    mgr = df._mgr
    try:
        mgr._verify_integrity()
    except (AssertionError, ValueError) as exc:
        raise _UnsafeValue(f"inconsistent frame blocks: {_first_line(exc)}") from None
    n_rows = len(df.index)
    for blk in mgr.blocks:
        locs = np.asarray(blk.mgr_locs.as_array)
        if locs.size and (locs.min() < 0 or locs.max() >= len(df.columns)):
            raise _UnsafeValue("frame block placement outside its columns")
        if blk.shape[-1] != n_rows:
            raise _UnsafeValue("frame block length != index length")
        _check_value(blk.values, 1)


def _check_value(obj: Any, depth: int = 0) -> None:
    """Raise :class:`_UnsafeValue` if ``obj`` (or anything it holds) could be read out of bounds:
    a categorical with codes past its categories, an invalid Arrow array, a frame whose blocks do
    not match its axes."""
    if depth > _MAX_DEPTH:
        raise _UnsafeValue("nesting too deep")
    if obj is None or isinstance(obj, str | bytes | int | float | bool | np.generic):
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            for item in obj.ravel(order="K"):
                _check_value(item, depth + 1)
        return
    if isinstance(obj, pa.Array | pa.ChunkedArray):
        try:
            obj.validate(full=True)
        except (pa.ArrowException, ValueError) as exc:
            raise _UnsafeValue(f"invalid Arrow array: {_first_line(exc)}") from None
        return
    if isinstance(obj, pd.DataFrame):
        _check_frame(obj)
        _check_value(obj.index, depth + 1)
        _check_value(obj.columns, depth + 1)
        return
    if isinstance(obj, pd.Series | pd.Index):
        _check_value(obj.array, depth + 1)
        return
    if isinstance(obj, pd.Categorical):
        _check_categorical(obj)
        return
    if isinstance(obj, pd.CategoricalDtype):
        if obj.categories is not None:
            _check_value(obj.categories, depth + 1)
        return
    pa_array = getattr(obj, "_pa_array", None)  # Arrow-backed pandas arrays
    if pa_array is not None:
        _check_value(pa_array, depth + 1)
        return
    if isinstance(obj, pd.api.extensions.ExtensionArray):
        nd = getattr(obj, "_ndarray", None)
        if nd is not None:
            _check_value(nd, depth + 1)
        return
    if isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            _check_value(item, depth + 1)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_value(k, depth + 1)
            _check_value(v, depth + 1)


def _checked_restore_array(data: Any) -> pa.Array:
    """``pyarrow.lib._restore_array`` followed by a full validation (offsets and lengths inside
    their buffers, valid UTF-8), so an array with hostile offsets never reaches a reader."""
    from pyarrow.lib import _restore_array

    arr = _restore_array(data)
    _check_value(arr)
    return arr


class _CheckedNdarray(np.ndarray):
    """What ``_reconstruct`` builds during unpickling: its ``__setstate__`` checks the state
    (numpy trusts an object array's list to be as long as its shape says) before numpy applies it.
    Consumers get a plain ``ndarray`` view (:func:`_plain`)."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _UnsafeValue("array state is not a 4- or 5-tuple")
        shape, dtype, data = state[-4], state[-3], state[-1]
        if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple):
            raise _UnsafeValue("array state has no dtype or shape")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise _UnsafeValue(f"array shape {shape!r} is not non-negative integers")
        n = int(np.prod(shape, dtype=object))
        if dtype.hasobject:
            if not isinstance(data, list) or len(data) != n:
                raise _UnsafeValue(f"object array of {n} items restored from {type(data).__name__}")
            data = [_plain(x) for x in data]
            state = (*state[:-1], data)
        elif not isinstance(data, bytes | bytearray | str) or len(data) != n * dtype.itemsize:
            raise _UnsafeValue(f"array data is not {n * dtype.itemsize} bytes")
        np.ndarray.__setstate__(self, state)


def _plain(obj: Any) -> Any:
    """``obj`` with every :class:`_CheckedNdarray` (also inside tuples, lists and dicts) replaced by
    a plain ``ndarray`` view of it."""
    if isinstance(obj, _CheckedNdarray):
        return obj.view(np.ndarray)
    if type(obj) is tuple:
        return tuple(_plain(x) for x in obj)
    if type(obj) is list:
        return [_plain(x) for x in obj]
    if type(obj) is dict:
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _checked_reconstruct(cls: Any, *args: Any) -> Any:
    """``numpy._core.multiarray._reconstruct`` building a :class:`_CheckedNdarray`."""
    from numpy._core.multiarray import _reconstruct

    if cls is not np.ndarray:
        raise _UnsafeValue(f"array of class {getattr(cls, '__name__', cls)!r}")
    return _reconstruct(_CheckedNdarray, *args)


def _checking(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its arguments made plain (:func:`_plain`) and checked by :func:`_check_value`."""

    def call(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _plain(args), _plain(kwargs)
        _check_value(args)
        _check_value(kwargs)
        return func(*args, **kwargs)

    call.__name__ = getattr(func, "__name__", "call")
    return call


class _CheckedCategorical(pd.Categorical):
    """Stands in for ``Categorical`` where a pickle restores one from state (``__setstate__``):
    checks the codes against the categories, then becomes a plain ``Categorical``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*_plain(args), **_plain(kwargs))
        self.__class__ = pd.Categorical  # built by the constructor: codes are computed, not given

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(_plain(state))
        self.__class__ = pd.Categorical
        _check_categorical(self)


_BACKED: dict[type, type] = {pd.Categorical: _CheckedCategorical}


def _checked_backed(cls: type) -> type:
    """A subclass of the ``NDArrayBacked`` class ``cls`` whose ``__setstate__`` gets plain arrays
    and then turns the instance back into ``cls``."""
    if cls not in _BACKED:

        def __setstate__(self: Any, state: Any) -> None:
            cls.__setstate__(self, _plain(state))
            self.__class__ = cls

        _BACKED[cls] = type(f"_Checked{cls.__name__}", (cls,), {"__setstate__": __setstate__})
    return _BACKED[cls]


def _unpickle_ndarray_backed(cls: type, *args: Any) -> Any:
    """``__pyx_unpickle_NDArrayBacked`` restoring through a checked subclass of ``cls``."""
    from pandas._libs.arrays import __pyx_unpickle_NDArrayBacked

    if cls is _CheckedCategorical:  # find_class hands out the stand-in for pandas.Categorical
        cls = pd.Categorical
    if cls not in _BACKED_ALLOWED:
        raise _UnsafeValue(f"array-backed class {getattr(cls, '__name__', cls)!r}")
    checked = _checked_backed(cls)
    args = _plain(args)
    obj = __pyx_unpickle_NDArrayBacked(checked, *args)
    if len(args) > 1 and args[1] is not None:  # state set directly, not through __setstate__
        obj.__class__ = cls
        if isinstance(obj, pd.Categorical):
            _check_categorical(obj)
    return obj


#: The array-backed classes a pickle may restore (those on :data:`ALLOWED`).
_BACKED_ALLOWED: frozenset[Any] = frozenset({pd.Categorical, pd.arrays.StringArray})


def _bytearray(*args: Any) -> bytearray:
    """``bytearray`` from bytes or text only (``bytearray(n)`` would allocate ``n`` bytes the
    pickle never had to contain)."""
    if args and not isinstance(args[0], bytes | bytearray | str):
        raise _UnsafeValue(f"bytearray from {type(args[0]).__name__}")
    return bytearray(*args)


def _py_buffer(obj: Any) -> pa.Buffer:
    """``pyarrow.py_buffer`` over an immutable copy of ``obj``: the Arrow buffer then owns bytes
    nothing else in the pickle can resize or free."""
    if not isinstance(obj, bytes | bytearray | memoryview):
        raise _UnsafeValue(f"Arrow buffer from {type(obj).__name__}")
    return pa.py_buffer(bytes(obj))


#: Allowed globals resolved to a checked stand-in.
_STAND_INS: dict[tuple[str, str], Any] = {
    ("pyarrow.lib", "_restore_array"): _checked_restore_array,
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"): _unpickle_ndarray_backed,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("builtins", "bytearray"): _bytearray,
    ("pyarrow.lib", "py_buffer"): _py_buffer,
}


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED` globals, and checks every argument
    an allowed callable is given (see :func:`_check_value`)."""

    def __init__(self, file: Any, source: str | Path, encoding: str = "ASCII"):
        super().__init__(file, fix_imports=False, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        mod, nm = _rename(module, name)
        if (mod, nm) not in ALLOWED:
            raise WaferSageError(self.source, "pickle refers to a forbidden global", f"{module}.{name}")
        if (mod, nm) in _STAND_INS:
            return _STAND_INS[(mod, nm)]
        obj: Any = importlib.import_module(mod)
        for part in nm.split("."):
            obj = getattr(obj, part)
        if obj is BlockManager:
            return _LegacyBlockManager
        if obj is pd.Categorical:
            return _CheckedCategorical  # NEWOBJ + BUILD goes through the checked __setstate__
        if isinstance(obj, type):
            return obj  # classes: NEWOBJ needs the class itself; their instances are checked after
        return _checking(obj)


class _CappedReader:
    """A binary stream (``read``/``readline`` only, as the unpickler needs) that refuses to yield
    more than ``limit`` bytes and never asks the underlying stream for more than that. It has no
    ``readinto``: an error raised while the unpickler's buffer is exported would outlive it."""

    def __init__(self, raw: IO[bytes], limit: int, source: Path):
        self.raw, self.limit, self.source, self.count = raw, limit, source, 0

    def _take(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.count > self.limit:
            raise WaferSageError(
                self.source, "decompressed size over the limit", f"more than {self.limit} bytes"
            )
        return data

    def read(self, size: int | None = -1) -> bytes:
        room = self.limit - self.count + 1  # never ask the stream for more than the cap allows
        return self._take(self.raw.read(room if size is None or size < 0 else min(size, room)))

    def readline(self, size: int | None = -1) -> bytes:
        room = self.limit - self.count + 1
        return self._take(self.raw.readline(room if size is None or size < 0 else min(size, room)))

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> _CappedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_MAGIC = ((b"\xfd7zXZ\x00", lzma.open), (b"\x1f\x8b", gzip.open), (b"BZh", bz2.open))


def _open(path: Path, max_bytes: int) -> _CappedReader:
    with open(path, "rb") as fh:
        head = fh.read(6)
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            return _CappedReader(opener(path, "rb"), max_bytes, path)
    size = path.stat().st_size  # a plain file: reads are clamped to what it holds
    return _CappedReader(open(path, "rb"), size, path)  # noqa: SIM115 - closed by the caller


def _load(path: Path, encoding: str, max_bytes: int) -> object:
    with _open(path, max_bytes) as fh:
        obj = _plain(SafeUnpickler(fh, path, encoding=encoding).load())
    _check_value(obj)
    return obj


def safe_load(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> object:
    """Unpickle ``path`` (plain, .xz, .gz or .bz2, recognised by content) with the restricted
    unpickler; a compressed file may expand to at most ``max_bytes``. A missing, truncated,
    corrupt, oversized or unsafe pickle raises a one-line ``WaferSageError``."""
    path = Path(path)
    if not path.is_file():
        raise WaferSageError(path, "file not found")
    try:
        try:
            return _load(path, "ASCII", max_bytes)
        except UnicodeDecodeError:  # Python 2 pickle of numpy arrays: raw bytes stored as str
            return _load(path, "latin1", max_bytes)
    except WaferSageError:
        raise
    except _UnsafeValue as exc:
        raise WaferSageError(path, "pickle holds unsafe data", str(exc)) from None
    except RecursionError:
        raise WaferSageError(path, "not a readable pickle", "nesting too deep") from None
    except MemoryError:
        raise WaferSageError(path, "not a readable pickle", "it asks for more memory than there is") from None
    except (pickle.UnpicklingError, EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as exc:
        raise WaferSageError(path, "not a readable pickle", _first_line(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any other failure inside a constructor is a bad file
        raise WaferSageError(path, "not a readable pickle", _first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
