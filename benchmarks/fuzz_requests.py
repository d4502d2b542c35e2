"""Seeded fuzzing of the chat request parser (:func:`wafersage.serving.app.chat_inputs`: everything
``/v1/chat/completions`` does with a body before the model). Valid requests are mutated four ways:
byte edits of the JSON text; a random JSON value put in place of any node (or a node dropped, or
an unknown key added); a broken image in the data URL (mutated PNG/.npy bytes, a .npy header
declaring another shape, broken base64 or MIME type); and nesting (brackets around or inside the
request, unbalanced, inside strings). Every outcome must be the model's image or a
:class:`RequestError` with a 4xx status and a one-line message; anything else (another exception,
a 5xx, a multi-line message) counts as a crash.

    nice -n 19 .venv/bin/python benchmarks/fuzz_requests.py --cases 10000 --seed 0
"""

from __future__ import annotations

import argparse
import base64
import copy
import io
import json
import resource
import sys
import time
import warnings
from collections import Counter
from typing import Any

import numpy as np
from fuzz_loaders import CANON, mutate
from PIL import Image

from wafersage.config import ServeLimits
from wafersage.serving.app import RequestError, chat_inputs
from wafersage.serving.images import NPY_MAGIC
from wafersage.wafers.render import render_map, save_png

IMAGE_SIZE = 64
LIMITS = ServeLimits(max_json_depth=32)
STRATEGIES = ("bytes", "tree", "image", "nesting")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    save_png(image, buf)  # a rendered map keeps its die-level map chunk, as `wafersage render` writes
    return buf.getvalue()


def _npy(m: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, m)
    return buf.getvalue()


def image_seeds() -> dict[str, tuple[str, bytes]]:
    """Name -> (MIME type, valid bytes) of the images a client sends."""
    die = np.array([0, 128, 255], np.uint8)[CANON]
    return {
        "die-png": ("image/png", _png(Image.fromarray(die))),
        "rendered-png": ("image/png", _png(render_map(CANON, IMAGE_SIZE))),
        "npy": ("application/x-npy", _npy(CANON)),
    }


def npy_declaring(rng: np.random.Generator) -> bytes:
    """The seed map's ``.npy`` bytes with a random shape in the header (huge, negative, empty,
    3-D, unclosed, not a tuple), the data left as it is."""
    side = [0, 1, 3, 4, 2**16, 10**7, 2**62, -4]
    shape = str(tuple(int(rng.choice(side)) for _ in range(int(rng.integers(0, 4)))))
    shape = str(rng.choice([shape, shape[:-1], f"'{shape}'", "None", "(4, 4.5)"]))
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}".ljust(117) + "\n"
    return NPY_MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + CANON.tobytes()


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def request(url: str, question: str = "What type of defect pattern is visible on this wafer map?") -> dict:
    """A valid OpenAI chat request with one question and one image."""
    return {
        "model": "wafersage",
        "max_tokens": 32,
        "messages": [
            {"role": "system", "content": "You read wafer maps."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            },
        ],
    }


def random_value(rng: np.random.Generator, depth: int = 0) -> Any:
    """A random JSON value: scalars at the edges of their types, short containers."""
    kind = int(rng.integers(0, 9 if depth < 3 else 6))
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(0, 2))
    if kind == 2:
        return int(rng.choice([0, -1, 1, 64, 65, 2**31, -(2**63), 10**30]))
    if kind == 3:
        return float(rng.choice([0.5, -1e308, 1e308, float("nan"), float("inf")]))
    if kind == 4:
        pool = ["", " ", "user", "image_url", "text", "data:", "data:image/png;base64,", "\x00", "\ud800"]
        return str(rng.choice(pool)) * int(rng.integers(1, 4))
    if kind == 5:
        return "".join(chr(int(c)) for c in rng.integers(1, 0x2FFF, int(rng.integers(0, 40))))
    if kind in (6, 7):
        return [random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    keys = ["role", "content", "type", "url", "text", "image_url", "x"]
    return {str(rng.choice(keys)): random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))}


def _nodes(obj: Any, path: tuple = ()) -> list[tuple]:
    """Paths (key/index tuples) of every node below ``obj``."""
    out = [path]
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out += _nodes(v, (*path, k))
    return out


def mutate_tree(rng: np.random.Generator, req: dict) -> dict | Any:
    """``req`` with one node replaced, dropped, or given an unknown key."""
    req = copy.deepcopy(req)
    paths = _nodes(req)
    path = paths[int(rng.integers(0, len(paths)))]
    if not path:
        return random_value(rng)
    parent = req
    for k in path[:-1]:
        parent = parent[k]
    op = int(rng.integers(0, 3))
    if op == 0:
        parent[path[-1]] = random_value(rng)
    elif op == 1:
        del parent[path[-1]]
    elif isinstance(parent[path[-1]], dict):
        parent[path[-1]][str(rng.choice(["stream", "n", "max_completion_tokens", "zz"]))] = random_value(rng)
    else:
        parent[path[-1]] = [parent[path[-1]]]
    return req


def mutate_image(rng: np.random.Generator, seeds: dict[str, tuple[str, bytes]]) -> dict:
    """A valid request whose data URL carries broken image bytes, base64 or MIME type."""
    mime, data = seeds[sorted(seeds)[int(rng.integers(0, len(seeds)))]]
    op = int(rng.integers(0, 5))
    if op <= 1:
        return request(data_url(mime, mutate(rng, data)))
    if op == 4:  # a .npy header declaring another shape
        return request(data_url("application/x-npy", npy_declaring(rng)))
    url = data_url(mime, data)
    if op == 2:  # broken base64 text
        return request(mutate(rng, url.encode()).decode("latin-1"))
    header = str(
        rng.choice(["data:", "data:image/png,", "data:text/plain;base64,", "data:;base64,", "http://x/"])
    )
    return request(header + url.split(",", 1)[1])


def nest(rng: np.random.Generator, body: bytes) -> bytes:
    """``body`` wrapped in, or holding, runs of brackets around the depth limit."""
    depth = int(rng.integers(1, 3 * LIMITS.max_json_depth))
    opener, closer = (b"[", b"]") if rng.integers(0, 2) else (b'{"a":', b"}")
    inner = opener * depth + b"1" + closer * int(rng.integers(0, depth + 1))
    op = int(rng.integers(0, 3))
    if op == 0:
        return inner
    if op == 1:
        return body.replace(b'"model": "wafersage"', b'"model": ' + inner, 1)
    return body.replace(b"What type", b"What" + b"[" * depth + b" type", 1)  # brackets inside a string


def case_body(rng: np.random.Generator, strategy: str, seeds: dict[str, tuple[str, bytes]]) -> bytes:
    """One fuzzed request body."""
    mime, data = seeds[sorted(seeds)[int(rng.integers(0, len(seeds)))]]
    valid = request(data_url(mime, data))
    if strategy == "bytes":
        return mutate(rng, json.dumps(valid).encode())
    if strategy == "tree":
        text = json.dumps(mutate_tree(rng, valid), ensure_ascii=bool(rng.integers(0, 2)))
        return text.encode("utf-8", "surrogatepass")
    if strategy == "image":
        return json.dumps(mutate_image(rng, seeds)).encode()
    return nest(rng, json.dumps(valid).encode())


def run_case(body: bytes) -> str:
    """``ok`` (the model's image), ``error`` (a one-line 4xx) or ``crash:<why>``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, image, _ = chat_inputs(body, LIMITS, IMAGE_SIZE)
    except RequestError as exc:
        if not 400 <= exc.status < 500:
            return f"crash:status {exc.status}"
        return "error" if "\n" not in exc.message else "crash:multi-line"
    except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
        return f"crash:{type(exc).__name__}"
    return "ok" if image.size == (IMAGE_SIZE, IMAGE_SIZE) else "crash:image size"


def fuzz(cases: int, seed: int) -> tuple[Counter[str], list[tuple[int, str, str]], float]:
    """Outcome counts (overall and per strategy), the (case, strategy, outcome) of crashes and the
    slowest case's seconds."""
    rng = np.random.default_rng(seed)
    seeds = image_seeds()
    counts: Counter[str] = Counter()
    crashes: list[tuple[int, str, str]] = []
    slowest = 0.0
    for i in range(cases):
        strategy = STRATEGIES[int(rng.integers(0, len(STRATEGIES)))]
        body = case_body(rng, strategy, seeds)
        t0 = time.perf_counter()
        outcome = run_case(body)
        slowest = max(slowest, time.perf_counter() - t0)
        outcome = "crash" if outcome.startswith("crash") else outcome
        counts[outcome] += 1
        counts[f"{strategy}:{outcome}"] += 1
        if outcome == "crash":
            crashes.append((i, strategy, run_case(body)))
    return counts, crashes, slowest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-memory-gb", type=float, default=6.0, help="address-space cap (protects the box)")
    args = ap.parse_args()
    cap = int(args.max_memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    t0 = time.perf_counter()
    counts, crashes, slowest = fuzz(args.cases, args.seed)
    wall = time.perf_counter() - t0
    outcomes = ("ok", "error", "crash")
    per = ", ".join(f"{s} " + "/".join(str(counts[f"{s}:{o}"]) for o in outcomes) for s in STRATEGIES)
    print(
        f"cases {args.cases} seed {args.seed}: parsed {counts['ok']}, clean errors {counts['error']}, "
        f"crashes {counts['crash']} in {wall:.0f} s (slowest case {slowest * 1000:.0f} ms; "
        f"ok/error/crash by strategy: {per})"
    )
    for i, strategy, outcome in crashes[:20]:
        print(f"  crash: case {i} ({strategy}): {outcome}")
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
