"""Shared fixtures: the real-data folder and builders of source files in old formats."""

from __future__ import annotations

import copyreg
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pandas.core.internals.managers import BlockManager

from wafersage.environment import apply_defaults

apply_defaults()
os.environ.setdefault("WAFERSAGE_LOG_LEVEL", "WARNING")  # quiet stages and bars unless asked for


@pytest.fixture(autouse=True)
def _no_mlflow_run_left_behind():
    """End any MLflow run a test leaves open and collect its garbage here, at a safe point.

    A trainer that trains outside a stage run starts its own MLflow run; its ``MLflowCallback``
    ends that run in ``__del__``. Left to a random later garbage collection, that ``__del__`` can
    fire inside MLflow's store set-up and deadlock on the store registry's lock.

    What survives the collection is then frozen (``gc.freeze``): the next test's collection scans
    only what was allocated since, not again the ~10^6 objects of torch, transformers, MLflow and
    GX (a full collection costs about a CPU-second, after every test). Cyclic garbage among frozen
    objects is never collected, so no ``__del__`` of theirs can fire at a random point either."""
    import gc
    import sys

    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        while mlflow.active_run() is not None:
            mlflow.end_run()
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The project root (the folder holding pyproject.toml)."""
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project (or ``$WAFERSAGE_SHARED_DATA``); skip when absent."""
    env = os.environ.get("WAFERSAGE_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set WAFERSAGE_SHARED_DATA)")
    return path


# --- a pickle as pandas 0.19 under Python 2 wrote it -------------------------------------------

#: Where pandas 0.19 / numpy 1.x / Python 2 kept what today lives elsewhere.
_OLD_NAMES = {
    ("pandas.core.frame", "DataFrame"): ("pandas.core.frame", "DataFrame"),
    ("pandas.core.internals.managers", "BlockManager"): ("pandas.core.internals", "BlockManager"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"): ("numpy.core.multiarray", "scalar"),
    ("builtins", "slice"): ("__builtin__", "slice"),
}


class _OldIndex:
    """Placeholder for ``pandas.indexes.base.Index`` / ``pandas.indexes.numeric.Int64Index``."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class _NewIndex:
    """Placeholder for ``pandas.indexes.base._new_Index``."""


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 2, Python 2 ``str`` opcodes for text and bytes, and pandas 0.19 reductions and
    module paths (``pandas.indexes``, ``pandas.core.internals.BlockManager``, ``numpy.core``)."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def __init__(self, file: Any):
        super().__init__(file, protocol=2)

    def _save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if isinstance(obj, _OldIndex):
            module, name = obj.module, obj.name
        elif obj is _NewIndex:
            module, name = "pandas.indexes.base", "_new_Index"
        else:
            module, name = obj.__module__, name or obj.__qualname__
            if obj is pd.DataFrame:
                module = "pandas.core.frame"
            module, name = _OLD_NAMES.get((module, name), (module, name))
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)

    dispatch[_OldIndex] = save_global

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, pd.DataFrame):
            state = {"_data": obj._mgr, "_typ": "dataframe", "_metadata": []}
            return copyreg.__newobj__, (pd.DataFrame,), state
        if isinstance(obj, BlockManager):
            axes = list(obj.axes)
            blocks = [{"values": b.values, "mgr_locs": b.mgr_locs.indexer} for b in obj.blocks]
            items = [obj.items[b["mgr_locs"]] for b in blocks]
            state = (axes, [b["values"] for b in blocks], items, {"0.14.1": {"axes": axes, "blocks": blocks}})
            return copyreg.__newobj__, (BlockManager,), state
        if isinstance(obj, pd.Index):
            if obj.dtype.kind in "iu":
                cls = _OldIndex("pandas.indexes.numeric", "Int64Index")
                data = np.asarray(obj, dtype=np.int64)
            else:
                cls, data = _OldIndex("pandas.indexes.base", "Index"), np.asarray(obj, dtype=object)
            return _NewIndex, (cls, {"data": data, "name": obj.name})
        return NotImplemented


def write_py2_pickle(obj: Any, path: Path) -> Path:
    """Pickle ``obj`` the way pandas 0.19 ``to_pickle`` did under Python 2."""
    with open(path, "wb") as fh:
        _Py2Pickler(fh).dump(obj)
    return path


def _label(name: str | None) -> np.ndarray:
    return np.zeros((0, 0)) if name is None else np.array([[name]], dtype=object)


def lswmd_frame(
    maps: list[Any],
    failure: list[str | None],
    lots: list[str] | None = None,
    index: list[float] | None = None,
) -> pd.DataFrame:
    """A frame shaped like WM-811K's LSWMD.pkl."""
    n = len(maps)
    lots = lots or [f"lot{1 + i // 25}" for i in range(n)]
    index = index or [float(1 + i % 25) for i in range(n)]
    train = [_label(None if f is None else "Training") for f in failure]
    return pd.DataFrame(
        {
            "waferMap": pd.Series(maps, dtype=object),
            "dieSize": np.full(n, 1683.0),
            "lotName": pd.Series(lots, dtype=object),
            "waferIndex": np.asarray(index, dtype=np.float64),
            "trianTestLabel": pd.Series(train, dtype=object),
            "failureType": pd.Series([_label(f) for f in failure], dtype=object),
        }
    )


@pytest.fixture
def make_lswmd(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write an LSWMD-like pickle (pandas 0.19, Python 2) and return its path."""

    def make(maps: list[Any], failure: list[str | None], name: str = "LSWMD.pkl", **kw: Any) -> Path:
        return write_py2_pickle(lswmd_frame(maps, failure, **kw), tmp_path / name)

    return make
