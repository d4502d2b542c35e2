"""The restricted unpickler: loads pandas pickles old and new, refuses everything else."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import lswmd_frame, write_py2_pickle

from wafersage.errors import WaferSageError
from wafersage.wafers.safe_pickle import safe_load


def _frame() -> pd.DataFrame:
    maps = [np.full((4, 5), 128, np.uint8), np.array([[0, 255], [128, 128]], np.uint8)]
    df = pd.DataFrame(
        {
            "waferMap": pd.Series(maps, dtype=object),
            "failureType": pd.Categorical(["None", "Center"]),
            "label": [[0] * 8, [1] + [0] * 7],
            "name": ["a", "b"],  # a pandas 3 str column (Arrow-backed)
            "x": [1.5, np.nan],
        }
    )
    return df.set_axis([7, 3])


@pytest.mark.parametrize("opener", [open, lzma.open, gzip.open, bz2.open], ids=["plain", "xz", "gz", "bz2"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_round_trip_compressed(tmp_path: Path, opener, protocol: int) -> None:
    df = _frame()
    path = tmp_path / "frame.pkl"
    with opener(path, "wb") as fh:
        pickle.dump(df, fh, protocol=protocol)
    out = safe_load(path)
    pd.testing.assert_frame_equal(out.drop(columns="waferMap"), df.drop(columns="waferMap"))
    assert all(np.array_equal(a, b) for a, b in zip(out["waferMap"], df["waferMap"], strict=True))


def test_pandas_to_pickle_xz(tmp_path: Path) -> None:
    df = _frame()
    df.to_pickle(tmp_path / "f.pkl.xz")
    assert safe_load(tmp_path / "f.pkl.xz").shape == df.shape


def test_old_pandas_python2_pickle(tmp_path: Path) -> None:
    """pandas 0.19 paths (pandas.indexes.*, Int64Index, core.internals.BlockManager, numpy.core),
    protocol 2, Python 2 byte strings (float columns need the latin-1 fallback)."""
    m = np.array([[0, 1, 1, 0], [1, 2, 1, 1], [1, 1, 2, 1], [0, 1, 1, 0]], np.uint8)
    path = write_py2_pickle(lswmd_frame([m, m], ["Center", None]), tmp_path / "LSWMD.pkl")
    raw = path.read_bytes()
    assert b"pandas.indexes.base" in raw and b"Int64Index" in raw and b"numpy.core.multiarray" in raw
    out = safe_load(path)
    assert list(out.columns) == [
        "waferMap",
        "dieSize",
        "lotName",
        "waferIndex",
        "trianTestLabel",
        "failureType",
    ]
    assert np.array_equal(out["waferMap"][1], m)
    assert out["failureType"][0].tolist() == [["Center"]] and out["failureType"][1].size == 0
    assert out["dieSize"].tolist() == [1683.0, 1683.0]


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _Evil(marker)}))
    with pytest.raises(WaferSageError, match="forbidden global") as err:
        safe_load(path)
    assert not marker.exists()
    assert "posix.system" in str(err.value) or "os.system" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(eval, protocol=2),  # builtins.eval
        b"cbuiltins\ngetattr\n.",
        b"c__builtin__\neval\n.",
        b"csubprocess\nPopen\n.",
        b"cnumpy\nload\n.",
        b"cpandas\nread_pickle\n.",
    ],
    ids=["eval", "getattr", "py2-eval", "popen", "numpy-load", "read_pickle"],
)
def test_forbidden_globals(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(payload)
    with pytest.raises(WaferSageError, match="pickle refers to a forbidden global"):
        safe_load(path)


def test_truncated_pickle(tmp_path: Path) -> None:
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps(_frame())[:300])
    with pytest.raises(WaferSageError, match="not a readable pickle") as err:
        safe_load(path)
    assert "\n" not in str(err.value)


def test_truncated_xz(tmp_path: Path) -> None:
    path = tmp_path / "t.pkl.xz"
    _frame().to_pickle(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(WaferSageError, match="not a readable pickle"):
        safe_load(path)


def test_garbage_and_empty(tmp_path: Path) -> None:
    (tmp_path / "g.pkl").write_bytes(b"this is not a pickle at all")
    (tmp_path / "e.pkl").write_bytes(b"")
    for name in ("g.pkl", "e.pkl"):
        with pytest.raises(WaferSageError, match="not a readable pickle"):
            safe_load(tmp_path / name)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WaferSageError, match="file not found"):
        safe_load(tmp_path / "nope.pkl")
