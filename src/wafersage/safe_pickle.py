"""A restricted unpickler for the pandas pickles the datasets ship as.

A pickle can name any importable callable and call it while loading, so ``pandas.read_pickle`` on
an untrusted file runs whatever the file says. :func:`safe_load` resolves only the globals on
:data:`ALLOWED` (the numpy/pandas constructors a pickled ``DataFrame`` of arrays, strings and
categoricals needs) and refuses every other one with a one-line ``WaferSageError`` before anything
is called. Old pandas/numpy module paths (pandas 0.x ``pandas.indexes``, ``Int64Index``, numpy 1.x
``numpy.core``) are renamed to their current homes first, so pickles written by old versions load.
"""

from __future__ import annotations

import _compat_pickle
import bz2
import gzip
import importlib
import lzma
import pickle
import zlib
from pathlib import Path
from typing import IO, Any

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


class _LegacyBlockManager(BlockManager):
    """Stands in for ``BlockManager`` during unpickling: pandas < 1.0 pickled it as a bare
    ``NEWOBJ`` with no arguments, which today's constructor rejects (as pandas' own
    ``pickle_compat`` works around). Returns a plain ``BlockManager``."""

    def __new__(cls, *args: Any) -> BlockManager:  # type: ignore[misc]
        if not args:
            args = ((), [], False)
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


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED` globals."""

    def __init__(self, file: IO[bytes], source: str | Path, encoding: str = "ASCII"):
        super().__init__(file, fix_imports=False, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        mod, nm = _rename(module, name)
        if (mod, nm) not in ALLOWED:
            raise WaferSageError(self.source, "pickle refers to a forbidden global", f"{module}.{name}")
        obj: Any = importlib.import_module(mod)
        for part in nm.split("."):
            obj = getattr(obj, part)
        return _LegacyBlockManager if obj is BlockManager else obj


_MAGIC = ((b"\xfd7zXZ\x00", lzma.open), (b"\x1f\x8b", gzip.open), (b"BZh", bz2.open))


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as fh:
        head = fh.read(6)
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            return opener(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


def _load(path: Path, encoding: str) -> object:
    with _open(path) as fh:
        return SafeUnpickler(fh, path, encoding=encoding).load()


def safe_load(path: str | Path) -> object:
    """Unpickle ``path`` (plain, .xz, .gz or .bz2, recognised by content) with the restricted
    unpickler; a missing, truncated, corrupt or unsafe pickle raises a one-line ``WaferSageError``."""
    path = Path(path)
    if not path.is_file():
        raise WaferSageError(path, "file not found")
    try:
        try:
            return _load(path, "ASCII")
        except UnicodeDecodeError:  # Python 2 pickle of numpy arrays: raw bytes stored as str
            return _load(path, "latin1")
    except WaferSageError:
        raise
    except (pickle.UnpicklingError, EOFError, OSError, lzma.LZMAError, zlib.error, ValueError) as exc:
        raise WaferSageError(path, "not a readable pickle", _first_line(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any other failure inside a constructor is a bad file
        raise WaferSageError(path, "not a readable pickle", _first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
