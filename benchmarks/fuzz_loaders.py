"""Seeded mutation fuzzing of the loaders and ``read_npy_map``: valid seed files (pickles plain and
compressed, .npz, .npy, a PNG folder) are mutated (byte flips, truncation, insertions, splices)
and loaded; every outcome must be a table/map or a one-line ``WaferSageError``. Anything else
(another exception, a multi-line message) counts as a crash; a segfault ends the run.

    nice -n 19 .venv/bin/python benchmarks/fuzz_loaders.py --cases 10000 --seed 0
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import pickle
import resource
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from wafersage.errors import WaferSageError
from wafersage.wafers.loaders import Limits, load
from wafersage.wafers.render import read_npy_map

CANON = np.array([[0, 1, 1, 0], [1, 2, 1, 1], [1, 1, 2, 1], [0, 1, 1, 0]], np.uint8)
PROCESSED = np.array([0, 128, 255], np.uint8)[CANON]
#: Small caps so a mutated length field cannot make a case slow.
LIMITS = Limits(max_die_side=64, max_decompressed_bytes=1 << 20)


def _pickled_frame(opener: Callable | None) -> bytes:
    df = pd.DataFrame(
        {
            "waferMap": pd.Series([PROCESSED, PROCESSED.T.copy()], dtype=object),
            "failureType": pd.Categorical(["Center", "none"]),
            "name": ["a", "bc"],
        }
    )
    raw = pickle.dumps(df, protocol=4)
    if opener is None:
        return raw
    buf = io.BytesIO()
    with opener(buf, "wb") as fh:
        fh.write(raw)
    return buf.getvalue()


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, np.stack([CANON, CANON]), np.eye(2, 8, dtype=np.float32))
    return buf.getvalue()


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, CANON)
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(CANON).save(buf, format="PNG")
    return buf.getvalue()


def seed_files() -> dict[str, tuple[str, bytes]]:
    """Kind -> (file name, valid bytes)."""
    return {
        "pickle": ("a.pkl", _pickled_frame(None)),
        "pickle-xz": ("a.pkl.xz", _pickled_frame(lambda b, m: lzma.open(b, m))),
        "pickle-gz": ("a.pkl.gz", _pickled_frame(lambda b, m: gzip.open(b, m))),
        "pickle-bz2": ("a.pkl.bz2", _pickled_frame(lambda b, m: bz2.open(b, m))),
        "npz": ("m.npz", _npz()),
        "npy": ("m.npy", _npy()),
        "png": ("m.png", _png()),
        "csv": ("labels.csv", b"file,labels,lot_id\nm.png,Center,L1\n"),
    }


def mutate(rng: np.random.Generator, data: bytes) -> bytes:
    """One to four random edits of ``data``."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(0, 6))
        pos = int(rng.integers(0, max(1, len(b))))
        if op == 0 and b:  # flip bits
            b[pos] ^= 1 << int(rng.integers(0, 8))
        elif op == 1 and b:  # random byte
            b[pos] = int(rng.integers(0, 256))
        elif op == 2:  # truncate
            del b[pos:]
        elif op == 3:  # insert random bytes
            b[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        elif op == 4 and b:  # interesting integer
            value = int(rng.choice([0, 1, 255, 0x7F, 0x80, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**40]))
            b[pos : pos + 8] = value.to_bytes(8, "little")
        elif op == 5 and len(b) > 2:  # splice a chunk elsewhere
            start = int(rng.integers(0, len(b) - 1))
            b[pos:pos] = b[start : start + int(rng.integers(1, 32))]
    return bytes(b)


def run_case(kind: str, name: str, data: bytes, folder: Path) -> str:
    """``ok``, ``error`` (a one-line WaferSageError) or ``crash:<exception type>``."""
    for p in folder.iterdir():
        p.unlink()
    path = folder / name
    path.write_bytes(data)
    if kind == "csv":
        (folder / "m.png").write_bytes(_png())
    elif kind == "png":
        (folder / "labels.csv").write_text("file,labels\nm.png,Center\n")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "npy":
                read_npy_map(path, LIMITS.max_die_side)
            elif kind in ("png", "csv"):
                load("png-folder", folder, LIMITS)
            elif kind == "npz":
                load("mixedwm38", path, LIMITS)
            else:
                load("wm811k-processed", path, LIMITS)
    except WaferSageError as exc:
        return "error" if "\n" not in str(exc) else "crash:multi-line"
    except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
        return f"crash:{type(exc).__name__}"
    return "ok"


def fuzz(cases: int, seed: int, folder: Path) -> tuple[Counter[str], list[tuple[int, str, str]]]:
    """Run ``cases`` seeded mutations; outcome counts and the (case, kind, outcome) of crashes."""
    rng = np.random.default_rng(seed)
    seeds = seed_files()
    kinds = sorted(seeds)
    counts: Counter[str] = Counter()
    crashes: list[tuple[int, str, str]] = []
    for i in range(cases):
        kind = kinds[int(rng.integers(0, len(kinds)))]
        name, data = seeds[kind]
        outcome = run_case(kind, name, mutate(rng, data), folder)
        counts["crash" if outcome.startswith("crash") else outcome] += 1
        if outcome.startswith("crash"):
            crashes.append((i, kind, outcome))
    return counts, crashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-memory-gb", type=float, default=6.0, help="address-space cap (protects the box)")
    args = ap.parse_args()
    cap = int(args.max_memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        counts, crashes = fuzz(args.cases, args.seed, Path(tmp))
    wall = time.perf_counter() - t0
    print(
        f"cases {args.cases} seed {args.seed}: loaded {counts['ok']}, clean errors {counts['error']}, "
        f"crashes {counts['crash']} in {wall:.0f} s"
    )
    for i, kind, outcome in crashes[:20]:
        print(f"  crash: case {i} ({kind}): {outcome}")
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
