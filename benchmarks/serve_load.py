"""Load test of ``wafersage serve`` on loopback: N requests at concurrency C, a share of them
malformed, too deep or oversized; p50/p99 latency, throughput, status counts, zero 5xx, server
alive after.

    .venv/bin/python benchmarks/serve_load.py --requests 2000 --concurrency 16 --bad 0.1 \
        [--model DIR] [--token T]

With ``--token`` the server requires ``Authorization: Bearer T`` and the client sends it (plus a
check that a request without it gets 401). ``--compare-token T --rounds R`` serves the same model
twice in one process, without and with the token, and sends the load to them in R alternating
chunks (each first in every other round, after an uncounted warm-up chunk each), so both see the
same machine noise; it prints both and their p50/p99 ratio.

Without ``--model`` a tiny untrained model is built in a temp folder (same architecture as the
default pipeline's, 96-px images); the server runs in-process (uvicorn thread) and the client is
``httpx2`` async (the transport under the official ``openai`` client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def bad_body(kind: int, good: dict) -> tuple[bytes, str]:
    """A malformed / oversized request of one of several kinds."""
    if kind == 0:
        return b"{not json", "malformed_json"
    if kind == 1:
        return json.dumps(
            {**good, "messages": [{"role": "user", "content": "no image here"}]}
        ).encode(), "no_image"
    if kind == 2:
        return b"x" * 3_000_000, "oversized_body"
    if kind == 4:
        return b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "deep_json"
    msg = [{"role": "user", "content": [{"type": "text", "text": "q"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]  # fmt: skip
    return json.dumps({**good, "messages": msg}).encode(), "bad_data_url"


async def load(
    url: str, n: int, conc: int, bad: float, good: dict, seed: int, token: str | None = None
) -> dict:
    rng = random.Random(seed)
    plan = [(bad_body(rng.randrange(5), good) if rng.random() < bad else (json.dumps(good).encode(), "good"))
            for _ in range(n)]  # fmt: skip
    lat: dict[str, list[float]] = {"good": [], "bad": []}
    codes: Counter = Counter()
    sem = asyncio.Semaphore(conc)

    async def one(client: httpx.AsyncClient, body: bytes, kind: str) -> None:
        async with sem:
            t = time.perf_counter()
            r = await client.post(
                "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            )
            lat["good" if kind == "good" else "bad"].append(time.perf_counter() - t)
            codes[(kind, r.status_code)] += 1

    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    auth = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=auth) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, b, k) for b, k in plan))
        wall = time.perf_counter() - t0
        alive = (await client.get("/health")).status_code == 200
    return {"wall": wall, "lat": lat, "codes": codes, "alive": alive}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def start(app, port: int, limits) -> tuple:
    """A uvicorn server for ``app`` on loopback ``port`` in a thread, once it is up."""
    import uvicorn

    from wafersage.serving.app import server_config

    server = uvicorn.Server(server_config(app, "127.0.0.1", port, limits, log_level="error"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.05)
    return server, th


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare(pred, limits, good: dict, a: argparse.Namespace) -> None:
    """The same load on a server without and one with a token, in alternating chunks."""
    from wafersage.serving.app import create_app

    servers = {}
    for name, token in (("no token", None), ("token", a.compare_token)):
        port = free_port()
        servers[name] = (start(create_app(pred, limits, api_key=token), port, limits), port, token)
    lat: dict[str, list[float]] = {k: [] for k in servers}
    fivexx = Counter()
    chunk = a.requests // a.rounds
    for _, port, token in servers.values():  # warm-up, not counted
        asyncio.run(load(f"http://127.0.0.1:{port}", chunk, a.concurrency, 0.0, good, a.seed, token))
    for r in range(a.rounds):  # each server goes first in every other round
        for name in sorted(servers, reverse=bool(r % 2)):
            _, port, token = servers[name]
            res = asyncio.run(
                load(f"http://127.0.0.1:{port}", chunk, a.concurrency, a.bad, good, a.seed + r, token)
            )
            lat[name] += res["lat"]["good"]
            fivexx[name] += sum(v for (_, c), v in res["codes"].items() if c >= 500)
    for (server, th), _, _ in servers.values():
        server.should_exit = True
        th.join(10)
    print(f"{a.rounds} alternating rounds of {chunk} requests, concurrency {a.concurrency}, {a.bad:.0%} bad")
    print("| server | good answers | p50 ms | p99 ms | 5xx |\n|---|---:|---:|---:|---:|")
    for name, xs in lat.items():
        p50, p99 = 1000 * pct(xs, 0.5), 1000 * pct(xs, 0.99)
        print(f"| {name} | {len(xs)} | {p50:.0f} | {p99:.0f} | {fivexx[name]} |")
    p50 = pct(lat["token"], 0.5) / pct(lat["no token"], 0.5)
    p99 = pct(lat["token"], 0.99) / pct(lat["no token"], 0.99)
    print(f"\ntoken / no token: p50 {p50:.3f}x, p99 {p99:.3f}x")
    if sum(fivexx.values()):
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bad", type=float, default=0.1)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--token", default=None, help="bearer token the server requires and the client sends")
    ap.add_argument("--compare-token", default=None, help="token of a second server compared in one run")
    ap.add_argument("--rounds", type=int, default=10, help="alternating chunks of the comparison")
    a = ap.parse_args()

    from wafersage.serving.app import ServeLimits, create_app
    from wafersage.serving.images import png_data_url
    from wafersage.serving.predictor import Predictor
    from wafersage.wafers.render import render_map
    from wafersage.wafers.synthetic import SyntheticConfig, generate

    tmp = tempfile.mkdtemp(prefix="serve_load_")
    if a.model is None:
        from tiny_model import build_tiny_model

        a.model = build_tiny_model(Path(tmp) / "tiny", size=96)
    pred = Predictor(a.model, batch_size=a.max_batch, max_new_tokens=a.max_tokens)
    row = generate(SyntheticConfig.from_dict({"n_wafers": 1, "seed": 0})).iloc[0]
    from wafersage.wafers.rawtable import decode_map

    img = render_map(decode_map(row["map"], row["rows"], row["cols"]), pred.image_size)
    good = {"model": "wafersage", "max_tokens": a.max_tokens, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png_data_url(img)}},
        {"type": "text", "text": "What type of defect pattern is visible on this wafer map?"}]}]}  # fmt: skip
    limits = ServeLimits(max_tokens=a.max_tokens, max_batch=a.max_batch, max_pending=256, timeout_s=120)
    port = free_port()
    if a.compare_token:
        compare(pred, limits, good, a)
        return
    server, th = start(create_app(pred, limits, api_key=a.token), port, limits)
    # baseline in the same run: one request at a time (no batching possible)
    url = f"http://127.0.0.1:{port}"
    unauth = httpx.post(url + "/v1/chat/completions", json=good, timeout=60).status_code
    base = asyncio.run(load(url, 32, 1, 0.0, good, a.seed, a.token))
    res = asyncio.run(load(url, a.requests, a.concurrency, a.bad, good, a.seed, a.token))
    server.should_exit = True
    th.join(10)
    fivexx = sum(v for (k, c), v in res["codes"].items() if c >= 500)
    good_lat = res["lat"]["good"]
    print("| requests | concurrency | bad share | wall s | req/s | p50 ms | p99 ms | bad p50 ms | 5xx |")
    print("|---|---|---|---|---|---|---|---|---|")
    p50, p99 = 1000 * pct(good_lat, 0.5), 1000 * pct(good_lat, 0.99)
    bad50 = 1000 * pct(res["lat"]["bad"], 0.5)
    rps = a.requests / res["wall"]
    print(
        f"| {a.requests} | {a.concurrency} | {a.bad:.0%} | {res['wall']:.1f} | {rps:.1f} | "
        f"{p50:.0f} | {p99:.0f} | {bad50:.1f} | {fivexx} |"
    )
    print(f"\nserver alive after the run: {res['alive']}")
    print(f"token required: {bool(a.token)}; a request without a token got {unauth}")
    base_rps = 32 / base["wall"]
    speedup = (len(good_lat) / res["wall"]) / base_rps
    print(
        f"\nbaseline (same server, concurrency 1, 32 good requests): {base_rps:.2f} req/s, "
        f"p50 {1000 * pct(base['lat']['good'], 0.5):.0f} ms; batching speed-up {speedup:.1f}x (answers/s)"
    )
    print("status codes:", dict(sorted((f"{k}:{c}", v) for (k, c), v in res["codes"].items())))
    if fivexx or not res["alive"] or (unauth == 401) != bool(a.token):
        sys.exit(1)


if __name__ == "__main__":
    main()
