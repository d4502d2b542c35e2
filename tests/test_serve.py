"""Serving: the OpenAI-compatible server with the official ``openai`` client on loopback (answers,
usage, malformed and oversized requests, the bounded queue, timeouts) and ``wafersage ask``."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from factories import with_center
from PIL import Image
from tiny_model import SIZE, build_tiny_model

from wafersage.render import render_map
from wafersage.serving.app import ServeLimits, create_app
from wafersage.serving.images import png_data_url

QUESTION = "What type of defect pattern is visible on this wafer map?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving ``app`` in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("serve") / "base")


@pytest.fixture(scope="module")
def predictor(model_dir):
    from wafersage.serving.predictor import Predictor

    return Predictor(model_dir, max_new_tokens=6)


LIMITS = ServeLimits(max_body_bytes=300_000, max_image_side=512, max_tokens=6, max_pending=8, timeout_s=60)


@pytest.fixture(scope="module")
def server(predictor):
    with Server(create_app(predictor, LIMITS, model_id="wafersage-test")) as s:
        yield s


def _client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _msg(url: str | None, text: str | None = QUESTION) -> list[dict]:
    parts = []
    if url is not None:
        parts.append({"type": "image_url", "image_url": {"url": url}})
    if text is not None:
        parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def test_openai_client_gets_the_models_answer(server, predictor):
    image = render_map(with_center(40), SIZE)
    resp = _client(server).chat.completions.create(model="wafersage-test", messages=_msg(png_data_url(image)))
    answer = resp.choices[0].message.content
    assert resp.model == "wafersage-test" and resp.object == "chat.completion"
    assert resp.choices[0].finish_reason == "stop"
    assert answer == predictor.answer([image], [QUESTION])[0]  # same greedy answer as in-process
    assert resp.usage.prompt_tokens == predictor.count_tokens(QUESTION) > 0
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["image_size"] == SIZE and health["served"] >= 1


def test_concurrent_requests_are_batched_and_all_answered(server, predictor):
    from concurrent.futures import ThreadPoolExecutor

    client = _client(server)
    urls = [png_data_url(render_map(with_center(30 + i), SIZE)) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(
                lambda u: (
                    client.chat.completions.create(model="m", messages=_msg(u)).choices[0].message.content
                ),
                urls,
            )
        )
    assert len(answers) == 6 and all(isinstance(a, str) for a in answers)


def test_npy_map_data_url_is_rendered_like_wafersage_render(server, predictor):
    buf = io.BytesIO()
    np.save(buf, with_center(40))
    url = "data:application/x-npy;base64," + base64.b64encode(buf.getvalue()).decode()
    resp = _client(server).chat.completions.create(model="m", messages=_msg(url), max_tokens=6)
    assert (
        resp.choices[0].message.content
        == predictor.answer([render_map(with_center(40), SIZE)], [QUESTION])[0]
    )


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        (_msg(None), "missing_image"),
        (_msg("data:image/png;base64,iVBOR", None), "missing_question"),
        (_msg("https://example.com/wafer.png"), "invalid_image_url"),
        (_msg("data:image/png;base64,@@not-base64@@"), "invalid_image"),
        (_msg("data:image/png;base64," + base64.b64encode(b"not a png").decode()), "invalid_image"),
        ([{"role": "system", "content": "hi"}], "missing_user_message"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,x"}}] * 2}],
            "too_many_images",
        ),
    ],
)
def test_bad_requests_get_a_clear_400(server, messages, code):
    import openai

    with pytest.raises(openai.BadRequestError) as exc:
        _client(server).chat.completions.create(model="m", messages=messages)
    assert exc.value.status_code == 400
    assert exc.value.body["code"] == code, exc.value.body


def test_malformed_json_oversized_body_and_image_are_4xx_and_server_survives(server):
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(server.url + "/v1/chat/completions", content=b"[1, 2]")
    assert r.status_code == 400
    r = httpx.post(server.url + "/v1/chat/completions", content=b"x" * 400_000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    big = Image.new("RGB", (1000, 600), (255, 255, 255))  # compresses small, decodes large
    body = {"model": "m", "messages": _msg(png_data_url(big))}
    r = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400 and "too large" in r.json()["error"]["message"]
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={**body, "messages": _msg(png_data_url(big.resize((64, 64)))), "max_tokens": 999},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_max_tokens"
    r = httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": True})
    assert r.status_code == 400
    assert httpx.get(server.url + "/health").status_code == 200


class SlowPredictor:
    """A stand-in model that takes ``delay`` seconds a batch (to fill the queue)."""

    image_size = SIZE

    def __init__(self, delay: float) -> None:
        self.delay, self.batches = delay, []

    def answer(self, images, questions, max_tokens=None):
        self.batches.append(len(questions))
        time.sleep(self.delay)
        return ["Center." for _ in questions]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def test_full_queue_is_429_and_slow_answers_time_out_with_504():
    slow = SlowPredictor(0.5)
    limits = ServeLimits(max_pending=2, max_batch=1, batch_wait_ms=0, timeout_s=5)
    url = png_data_url(render_map(with_center(30), SIZE))
    body = {"model": "m", "messages": _msg(url)}

    async def burst(base: str) -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            rs = await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(8)))
        return [r.status_code for r in rs]

    with Server(create_app(slow, limits)) as s:
        codes = asyncio.run(burst(s.url))
    assert codes.count(200) >= 2 and codes.count(429) >= 1 and set(codes) <= {200, 429}, codes
    with Server(create_app(SlowPredictor(2.0), ServeLimits(timeout_s=0.3))) as s:
        r = httpx.post(s.url + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert httpx.get(s.url + "/health").status_code == 200


def test_ask_answers_npy_png_and_folders_as_json_lines(tmp_path, model_dir, predictor):
    from typer.testing import CliRunner

    from wafersage.cli import app

    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / "a.npy", with_center(40))
    render_map(with_center(36), 96).save(maps / "b.png")  # another render size: fitted to the model's
    out = tmp_path / "answers.jsonl"
    r = CliRunner().invoke(
        app,
        ["ask", str(maps), QUESTION, "--model", str(model_dir), "--out", str(out), "--max-new-tokens", "6"],
    )
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["file"] for x in lines] == ["a.npy", "b.png"]
    assert lines[0]["answer"] == predictor.answer([render_map(with_center(40), SIZE)], [QUESTION])[0]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((10, 10), 7, dtype=np.uint8))
    out2 = tmp_path / "none.jsonl"
    r = CliRunner().invoke(app, ["ask", str(bad), QUESTION, "--model", str(model_dir), "--out", str(out2)])
    assert r.exit_code != 0 and not out2.exists()


@pytest.mark.slow
def test_serve_command_serves_a_model_folder(tmp_path, model_dir):
    """``wafersage serve --model DIR`` as a real process; the openai client gets an answer."""
    import os
    import subprocess
    import sys

    from openai import OpenAI

    port = free_port()
    params = tmp_path / "params.yaml"
    params.write_text("serve:\n  max_tokens: 4\n  max_pending: 4\n")
    exe = Path(sys.executable).parent / "wafersage"
    cmd = [str(exe), "serve", "--model", str(model_dir), "--port", str(port), "--params", str(params)]
    proc = subprocess.Popen(cmd, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-2000:]
            time.sleep(0.5)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        url = png_data_url(render_map(with_center(40), SIZE))
        resp = client.chat.completions.create(model="m", messages=_msg(url))
        assert resp.model == "wafersage-base" and isinstance(resp.choices[0].message.content, str)
    finally:
        proc.terminate()
        proc.wait(20)
