"""A corpus of malformed and hostile inputs, each run through the ``wafersage`` command: every one
must end in the one-line error (file and rule), the CLI's error exit status, no traceback and no
output file. Hostile pickles are built here from the globals the restricted unpickler allows."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.lib import format as npf
from pandas._libs.internals import _unpickle_block
from pandas.arrays import ArrowStringArray
from pandas.core.internals.managers import BlockManager
from PIL import Image
from pyarrow.lib import _restore_array, py_buffer, type_for_alias

from wafersage.cli import ERROR_EXIT, main
from wafersage.wafers.rawtable import SCHEMA

PROCESSED = np.array(
    [[0, 128, 128, 0], [128, 255, 128, 128], [128, 128, 255, 128], [0, 128, 128, 0]], np.uint8
)
CANON = (PROCESSED // 127).astype(np.uint8)


class R:
    """Pickles as ``func(*args)``: how the hostile pickles name the allowed globals."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


# --- builders of bad inputs (each writes into tmp and returns the CLI arguments) ----------------


def _frame_pickle(path: Path, maps: list[Any], types: list[Any], opener: Callable = open) -> Path:
    df = pd.DataFrame({"waferMap": pd.Series(maps, dtype=object), "failureType": types})
    with opener(path, "wb") as fh:
        pickle.dump(df, fh, protocol=4)
    return path


def _ingest(tmp: Path, source: str, path: Path, params: str = "") -> list[str]:
    (tmp / "params.yaml").write_text("ingest:\n" + (params or "  source: synthetic\n"))
    return [
        "ingest",
        "--source",
        source,
        "--path",
        str(path),
        "--out",
        str(tmp / "out" / "wafers.parquet"),
        "--metrics",
        str(tmp / "out" / "metrics.json"),
        "--params",
        str(tmp / "params.yaml"),
    ]


def _arrow_offsets(hi: int) -> Callable[[Path], list[str]]:
    """A processed pickle whose Arrow string column has an offset ``hi`` past its 3-byte buffer."""

    def build(tmp: Path) -> list[str]:
        offsets = R(py_buffer, bytearray(struct.pack("<3q", 0, 1, hi)))
        data = R(py_buffer, bytearray(b"abc"))
        arr = R(_restore_array, (R(type_for_alias, "large_string"), 2, 0, 0, [None, offsets, data], [], None))
        frame = R(pd.DataFrame, {"waferMap": [PROCESSED, PROCESSED], "failureType": R(ArrowStringArray, arr)})
        path = tmp / "arrow.pkl"
        path.write_bytes(pickle.dumps(frame, protocol=4))
        return _ingest(tmp, "wm811k-processed", path)

    return build


def _categorical_codes(tmp: Path) -> list[str]:
    """A categorical ``failureType`` whose codes point 10^8 entries past its categories."""
    cat = pd.Categorical.from_codes([0, 0], categories=pd.Index(["Center", "Donut"]))
    cat.__setstate__((cat.dtype, np.array([0, 100_000_000], np.int64)))
    return _ingest(tmp, "wm811k-processed", _frame_pickle(tmp / "cat.pkl", [PROCESSED] * 2, cat))


def _block_placement(tmp: Path) -> list[str]:
    """A frame whose only block claims column 10^8 of a one-column frame."""
    block = R(_unpickle_block, np.zeros((1, 2)), slice(100_000_000, 100_000_001, 1), 2)
    frame = R(pd.DataFrame, R(BlockManager, [block], [pd.Index(["waferMap"]), pd.RangeIndex(2)]))
    path = tmp / "blocks.pkl"
    path.write_bytes(pickle.dumps(frame, protocol=4))
    return _ingest(tmp, "wm811k-processed", path)


def _bomb(opener: Callable, suffix: str) -> Callable[[Path], list[str]]:
    """A compressed pickle expanding to ~4 MB, against a 1 MB ``ingest.max_decompressed_bytes``."""

    def build(tmp: Path) -> list[str]:
        path = tmp / f"bomb.pkl.{suffix}"
        with opener(path, "wb") as fh:
            fh.write(pickle.dumps(b"\0" * (4 << 20), protocol=4))
        return _ingest(tmp, "wm811k-processed", path, "  max_decompressed_bytes: 1000000\n")

    return build


def _pickle_bytes(name: str, data: bytes) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / name).write_bytes(data)
        return _ingest(tmp, "wm811k-processed", tmp / name)

    return build


def _truncated(opener: Callable, name: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = _frame_pickle(tmp / name, [PROCESSED] * 3, ["Center"] * 3, opener)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        return _ingest(tmp, "wm811k-processed", path)

    return build


def _processed(maps: list[Any], types: list[Any]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return _ingest(tmp, "wm811k-processed", _frame_pickle(tmp / "p.pkl", maps, types))

    return build


def _npy_header(shape: tuple[int, ...], dtype: str = "|u1", tail: bytes = b"\0" * 64) -> bytes:
    buf = io.BytesIO()
    npf.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + tail


def _render(name: str, data: bytes | Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / name
        if callable(data):
            data(path)
        else:
            path.write_bytes(data)
        return ["render", str(path), str(tmp / "out" / "map.png")]

    return build


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _png_folder(csv: str, files: dict[str, bytes | Callable[[Path], None]] | None = None) -> Callable:
    """A png-folder: ``labels.csv`` text (or bytes) and files written by bytes or a writer."""

    def build(tmp: Path) -> list[str]:
        folder = tmp / "pngs"
        folder.mkdir()
        (tmp / "outside.png").write_bytes(b"")
        Image.fromarray(CANON).save(tmp / "outside.png")
        for name, data in (files or {}).items():
            if callable(data):
                data(folder / name)
            else:
                (folder / name).write_bytes(data)
        if isinstance(csv, bytes):
            (folder / "labels.csv").write_bytes(csv)
        else:
            (folder / "labels.csv").write_text(csv.replace("{tmp}", str(tmp)))
        return _ingest(tmp, "png-folder", folder)

    return build


def _save_image(arr: np.ndarray, fmt: str = "PNG") -> Callable[[Path], None]:
    return lambda path: Image.fromarray(arr).save(path, format=fmt)


def _npz(members: dict[str, bytes]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / "mixed.npz"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return _ingest(tmp, "mixedwm38", path)

    return build


def _raw_table(rows: int, cols: int, blob: bytes) -> pa.Table:
    n = 1
    return pa.Table.from_pydict(
        {
            "wafer_id": ["w0"],
            "source": ["test"],
            "lot_id": [None],
            "rows": [rows] * n,
            "cols": [cols] * n,
            "map": [blob],
            "labels": [["Center"]],
            "true_labels": [None],
            "noise_flipped": [None],
            "pattern_params": [None],
        },
        schema=SCHEMA,
    )


def _describe(rows: int, cols: int, blob: bytes | None = None, corrupt: bool = False) -> Callable:
    """``describe`` on a raw table with the given ``rows`` x ``cols`` (or a corrupt file)."""

    def build(tmp: Path) -> list[str]:
        raw = tmp / "wafers.parquet"
        if corrupt:
            raw.write_bytes(b"PAR1" + b"\x13" * 200 + b"PAR1")
        else:
            pq.write_table(_raw_table(rows, cols, blob if blob is not None else b"\1" * 400), raw)
        (tmp / "params.yaml").write_text("describe:\n  labels_from: raw\n")
        return [
            "describe",
            "--raw",
            str(raw),
            "--out",
            str(tmp / "out" / "descriptions.jsonl"),
            "--metrics",
            str(tmp / "out" / "metrics.json"),
            "--params",
            str(tmp / "params.yaml"),
        ]

    return build


def _clean_with(corrections: bytes | str) -> Callable:
    """``clean`` on a one-wafer raw table with the given corrections file (refused before any work:
    one wafer could not be cleaned at all)."""

    def build(tmp: Path) -> list[str]:
        raw = tmp / "wafers.parquet"
        pq.write_table(_raw_table(20, 20, b"\1" * 400), raw)
        fixes = tmp / "corrections.csv"
        fixes.write_bytes(corrections if isinstance(corrections, bytes) else corrections.encode())
        (tmp / "params.yaml").write_text("clean:\n  seed: 0\n")
        out = ["--out", str(tmp / "out" / "labels.parquet"), "--metrics", str(tmp / "out" / "m.json")]
        return ["clean", "--raw", str(raw), "--corrections", str(fixes), *out, "--reports", str(tmp / "out")]

    return build


def _align_on_corrupt_parquet(tmp: Path) -> list[str]:
    """``align`` on a corrupt calibration pool."""
    (tmp / "pool.parquet").write_bytes(b"PAR1" + b"\x13" * 200 + b"PAR1")
    out = ["--out", str(tmp / "out" / "rc.json"), "--metrics", str(tmp / "out" / "m.json")]
    return ["align", "--pool", str(tmp / "pool.parquet"), *out, "--scatter", str(tmp / "out" / "s.csv")]


# --- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], list[str]]
    file: str  # the file name the message must name
    rule: str  # the rule the message must state
    isolate: bool = False  # run in a subprocess (it crashed the interpreter before the hardening)


CASES: dict[str, Case] = {
    # hostile pickles from allowed globals
    "arrow-offsets-small-overrun": Case(_arrow_offsets(2000), "arrow.pkl", "invalid Arrow array", True),
    "arrow-offsets-far-past-buffer": Case(_arrow_offsets(1 << 40), "arrow.pkl", "invalid Arrow array", True),
    "categorical-codes-out-of-range": Case(_categorical_codes, "cat.pkl", "categorical codes outside", True),
    "block-placement-out-of-range": Case(_block_placement, "blocks.pkl", "frame block placement", True),
    "forbidden-global": Case(
        _pickle_bytes("evil.pkl", b"cos\nsystem\n(S'true'\ntR."), "evil.pkl", "forbidden global"
    ),
    # decompression bombs
    "xz-bomb": Case(_bomb(lzma.open, "xz"), "bomb.pkl.xz", "decompressed size over the limit"),
    "gz-bomb": Case(_bomb(gzip.open, "gz"), "bomb.pkl.gz", "decompressed size over the limit"),
    "bz2-bomb": Case(_bomb(bz2.open, "bz2"), "bomb.pkl.bz2", "decompressed size over the limit"),
    # broken pickles
    "truncated-pickle": Case(_truncated(open, "t.pkl"), "t.pkl", "not a readable pickle"),
    "truncated-xz-pickle": Case(_truncated(lzma.open, "t.pkl.xz"), "t.pkl.xz", "not a readable pickle"),
    "truncated-gz-pickle": Case(_truncated(gzip.open, "t.pkl.gz"), "t.pkl.gz", "not a readable pickle"),
    "empty-pickle": Case(_pickle_bytes("e.pkl", b""), "e.pkl", "not a readable pickle"),
    "garbage-pickle": Case(_pickle_bytes("g.pkl", b"\x80\x04garbage"), "g.pkl", "not a readable pickle"),
    "pickle-not-a-frame": Case(
        _pickle_bytes("l.pkl", pickle.dumps([1, 2])), "l.pkl", "not a pandas DataFrame"
    ),
    # bad cells
    "nan-map-cell": Case(
        _processed([np.where(PROCESSED == 255, np.nan, PROCESSED.astype(float))], ["Center"]),
        "p.pkl",
        "map value outside encoding",
    ),
    "ragged-map": Case(_processed([[[0, 128], [128]]], ["Center"]), "p.pkl", "map is ragged"),
    "unknown-label": Case(_processed([PROCESSED], ["Banana"]), "p.pkl", "unknown label"),
    "oversized-map": Case(
        _processed([np.full((600, 600), 128, np.uint8)], ["Center"]), "p.pkl", "map dimensions out of range"
    ),
    # .npy maps (render)
    "npy-10e7-square": Case(_render("huge.npy", _npy_header((10**7, 10**7))), "huge.npy", "array too large"),
    "npy-3d": Case(_render("cube.npy", _npy_header((4, 4, 4))), "cube.npy", "map must be 2-D"),
    "npy-oversized-side": Case(
        _render("wide.npy", _npy_header((4, 600), tail=b"\1" * 2400)),
        "wide.npy",
        "map dimensions out of range",
    ),
    "npy-truncated-data": Case(
        _render("short.npy", _npy_header((8, 8), tail=b"\1" * 10)), "short.npy", "not a readable .npy"
    ),
    "npy-string-dtype": Case(
        _render("str.npy", _npy_header((4, 4), "<U4")), "str.npy", "dtype must be numeric"
    ),
    "npy-empty-file": Case(_render("empty.npy", b""), "empty.npy", "not a readable .npy"),
    # PNG folders
    "png-header-100000-square": Case(
        _png_folder("file,labels\nbig.png,Center\n", {"big.png": _png_header_only(100_000, 100_000)}),
        "big.png",
        "image dimensions out of range",
    ),
    "png-oversized-real-image": Case(
        _png_folder("file,labels\nbig.png,Center\n", {"big.png": _save_image(np.ones((600, 600), np.uint8))}),
        "big.png",
        "image dimensions out of range",
    ),
    "tiff-named-png": Case(
        _png_folder("file,labels\nt.png,Center\n", {"t.png": _save_image(CANON, "TIFF")}),
        "t.png",
        "not a PNG file",
    ),
    "empty-png": Case(_png_folder("file,labels\ne.png,Center\n", {"e.png": b""}), "e.png", "not a PNG file"),
    "csv-parent-path": Case(
        _png_folder("file,labels\n../outside.png,Center\n"), "labels.csv", "leaves the folder"
    ),
    "csv-absolute-path": Case(
        _png_folder("file,labels\n{tmp}/outside.png,Center\n"), "labels.csv", "leaves the folder"
    ),
    "csv-latin1-encoding": Case(
        _png_folder("file,labels\nm.png,Cèntre\n".encode("latin-1"), {"m.png": _save_image(CANON)}),
        "labels.csv",
        "not a readable CSV",
    ),
    "csv-utf16-encoding": Case(
        _png_folder("file,labels\nm.png,Center\n".encode("utf-16"), {"m.png": _save_image(CANON)}),
        "labels.csv",
        "not a readable CSV",
    ),
    "csv-empty-file": Case(_png_folder(""), "labels.csv", "not a readable CSV"),
    "csv-unknown-label": Case(
        _png_folder("file,labels\nm.png,Banana\n", {"m.png": _save_image(CANON)}),
        "labels.csv",
        "unknown label",
    ),
    # MixedWM38 .npz
    "npz-huge-header": Case(
        _npz({"arr_0.npy": _npy_header((10**6, 10**4, 10**4)), "arr_1.npy": _npy_header((1, 8))}),
        "mixed.npz",
        "array too large",
    ),
    "npz-empty-file": Case(
        lambda tmp: (tmp / "e.npz").write_bytes(b"") or _ingest(tmp, "mixedwm38", tmp / "e.npz"),
        "e.npz",
        "not a readable .npz",
    ),
    "npz-not-a-zip": Case(
        lambda tmp: (tmp / "m.npz").write_bytes(b"PK\3\4broken") and _ingest(tmp, "mixedwm38", tmp / "m.npz"),
        "m.npz",
        "not a readable .npz",
    ),
    # raw tables read by a later stage
    "raw-rows-cols-100000": Case(_describe(100_000, 100_000), "wafers.parquet", "rows out of range"),
    "raw-rows-cols-negative": Case(_describe(-20, -20), "wafers.parquet", "rows out of range"),
    "raw-map-size-mismatch": Case(_describe(10, 10, b"\1" * 7), "wafers.parquet", "map size != rows*cols"),
    "raw-corrupt-parquet": Case(_describe(0, 0, corrupt=True), "wafers.parquet", "not a readable Parquet"),
    # label corrections from the review page
    "corrections-unknown-wafer": Case(
        _clean_with("wafer_id,label\nw0,Loc\nw7,Center\n"), "corrections.csv", "row 1: unknown wafer_id"
    ),
    "corrections-unknown-class": Case(
        _clean_with("wafer_id,label\nw0,Banana\n"), "corrections.csv", "row 0: unknown label ('Banana')"
    ),
    "corrections-duplicate-wafer": Case(
        _clean_with("wafer_id,label\nw0,Loc\nw0,Center\n"), "corrections.csv", "row 1: duplicate wafer_id"
    ),
    "corrections-no-label-column": Case(
        _clean_with("wafer_id,labels\nw0,Loc\n"), "corrections.csv", "missing columns (label;"
    ),
    "corrections-utf16-encoding": Case(
        _clean_with("wafer_id,label\nw0,Loc\n".encode("utf-16")), "corrections.csv", "not a readable CSV"
    ),
    "align-corrupt-parquet": Case(_align_on_corrupt_parquet, "pool.parquet", "not a readable Parquet"),
    # bad settings
    "params-max-die-side": Case(
        lambda tmp: _ingest(tmp, "png-folder", tmp, "  max_die_side: 100000\n"), "params.yaml", "max_die_side"
    ),
}


def _run_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = sys.argv
    sys.argv = ["wafersage", *args]
    try:
        with pytest.raises(SystemExit) as ended:
            main()
    finally:
        sys.argv = argv
    return ended.value.code, capsys.readouterr().err


def _run_isolated(args: list[str]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONFAULTHANDLER": ""}
    r = subprocess.run(
        [sys.executable, "-c", "from wafersage.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return r.returncode, r.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_one_line_error(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    monkeypatch.chdir(tmp_path)  # anything written by mistake lands here, not in the project
    args = case.build(tmp_path)
    code, err = _run_isolated(args) if case.isolate else _run_in_process(args, capsys)
    lines = [line for line in err.splitlines() if line.startswith("wafersage: error:")]
    assert code == ERROR_EXIT, f"exit {code}: {err[-2000:]}"
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    assert case.file in lines[0] and case.rule in lines[0], lines[0]
    assert not (tmp_path / "out").exists(), sorted(p.name for p in (tmp_path / "out").iterdir())


# --- seeded mutation fuzzing (hypothesis is not installed) --------------------------------------


def _fuzz_module() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_loaders.py"
    spec = importlib.util.spec_from_file_location("fuzz_loaders", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeded_mutation_fuzz_gives_only_clean_errors() -> None:
    """300 seeded mutations of valid pickles, .npz, .npy, PNG and CSV files, in a subprocess with a
    4 GiB address-space cap (a segfault or a runaway allocation fails the test, not the run): each
    loads or is a one-line WaferSageError. The benchmark runs the same harness at 10,000 cases."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_loaders.py"
    r = subprocess.run(
        [sys.executable, str(script), "--cases", "300", "--seed", "7", "--max-memory-gb", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and "crashes 0 " in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_fuzz_seed_files_are_valid(tmp_path: Path) -> None:
    """The unmutated seeds load, so the fuzzer's errors come from the mutations."""
    fuzz = _fuzz_module()
    for kind, (name, data) in fuzz.seed_files().items():
        assert fuzz.run_case(kind, name, data, tmp_path) == "ok", kind


def _request_fuzz_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module("fuzz_requests")


def test_seeded_request_fuzz_gives_only_clean_4xx() -> None:
    """2,000 seeded mutations of chat requests (bytes, JSON nodes, images in the data URL,
    nesting) through the request parser, in a memory-capped subprocess: each is the model's image
    or a one-line 4xx. It found a .npy header numpy's tokenizer rejects with TokenError (a 500)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_requests.py"
    r = subprocess.run(
        [sys.executable, str(script), "--cases", "2000", "--seed", "7", "--max-memory-gb", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and "crashes 0 " in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    parsed = int(r.stdout.split("parsed ")[1].split(",")[0])
    assert 200 <= parsed <= 1000, r.stdout  # the mutations leave some requests valid, not most


def test_request_fuzz_seeds_parse_and_every_strategy_is_refused_somewhere(monkeypatch) -> None:
    """The unmutated requests parse, so the fuzzer's 4xx come from its mutations; each strategy
    produces both outcomes."""
    fuzz = _request_fuzz_module(monkeypatch)
    for mime, data in fuzz.image_seeds().values():
        assert fuzz.run_case(json.dumps(fuzz.request(fuzz.data_url(mime, data))).encode()) == "ok", mime
    counts, crashes, _ = fuzz.fuzz(400, 3)
    assert not crashes
    for strategy in fuzz.STRATEGIES:
        assert counts[f"{strategy}:ok"] > 0 and counts[f"{strategy}:error"] > 0, strategy
