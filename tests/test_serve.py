"""Serving: the OpenAI-compatible server with the official ``openai`` client on loopback (answers,
usage, malformed and oversized requests, the bounded queue, timeouts), its hardening (bearer token,
bind refusal, docs off, generic 500s, deep JSON, slow clients, timed-out work dropped) and
``wafersage ask``."""

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

from wafersage.serving.app import ServeLimits, bind_refusal, create_app, json_depth, server_config
from wafersage.serving.images import png_data_url
from wafersage.wafers.render import render_map

QUESTION = "What type of defect pattern is visible on this wafer map?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving ``app`` in a thread on a free loopback port."""

    def __init__(self, app, limits: ServeLimits | None = None) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(server_config(app, "127.0.0.1", self.port, limits))
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
    images = [render_map(with_center(30 + i), SIZE) for i in range(6)]
    assert answers == [predictor.answer([im], [QUESTION])[0] for im in images]  # each its own answer

    recorder = SlowPredictor(0.2)  # counts the batches the server forms
    limits = ServeLimits(max_batch=8, batch_wait_ms=100, timeout_s=30)
    with Server(create_app(recorder, limits)) as s:
        codes = asyncio.run(_burst(s.url, {"model": "m", "messages": _msg(urls[0])}, 6))
    assert codes == [200] * 6 and sum(recorder.batches) == 6
    assert len(recorder.batches) < 6 and max(recorder.batches) > 1, recorder.batches


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


async def _burst(base: str, body: dict, n: int) -> list[int]:
    """The status codes of ``n`` identical chat requests sent at once."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        rs = await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(n)))
    return [r.status_code for r in rs]


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
    with Server(create_app(slow, limits)) as s:
        codes = asyncio.run(_burst(s.url, body, 8))
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


# --- hardening ---------------------------------------------------------------------------------

TOKEN = "s3cret-token"
CHAT = "/v1/chat/completions"


class RecordingPredictor:
    """A stand-in model recording the questions of each batch; ``delay`` seconds a batch, or
    raising ``fail`` instead of answering."""

    image_size = SIZE
    name = "recording"

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.delay, self.fail, self.calls = delay, fail, []

    def answer(self, images, questions, max_tokens=None):
        self.calls.append(list(questions))
        if self.fail is not None:
            raise self.fail
        time.sleep(self.delay)
        return ["Center." for _ in questions]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _body(question: str = QUESTION) -> dict:
    return {"model": "m", "messages": _msg(png_data_url(render_map(with_center(30), SIZE)), question)}


def _err(status_kind: str, code: str, message: str) -> dict:
    return {"error": {"message": message, "type": status_kind, "param": None, "code": code}}


def test_bearer_token_is_required_everywhere_but_health():
    from fastapi.testclient import TestClient

    missing = _err(
        "invalid_request_error", "missing_api_key", "missing bearer token: send Authorization: Bearer <token>"
    )
    wrong = _err("invalid_request_error", "invalid_api_key", "invalid bearer token")
    with TestClient(create_app(RecordingPredictor(), api_key=TOKEN)) as c:
        assert c.get("/health").status_code == 200
        for method, path in [("GET", "/v1/models"), ("POST", CHAT), ("GET", "/nowhere")]:
            r = c.request(method, path, json=_body() if method == "POST" else None)
            assert (r.status_code, r.json(), r.headers["www-authenticate"]) == (401, missing, "Bearer"), path
        for header in [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, "Bearer s3cret-tokeñ"]:
            r = c.get("/v1/models", headers={"Authorization": header.encode()})
            assert (r.status_code, r.json()) == (401, wrong), header
        ok = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/v1/models", headers=ok).status_code == 200
        assert c.get("/v1/models", headers={"authorization": f"bearer {TOKEN}"}).status_code == 200
        r = c.post(CHAT, json=_body(), headers=ok)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Center."


def test_openai_client_with_and_without_the_token():
    import openai
    from openai import OpenAI

    with Server(create_app(RecordingPredictor(), api_key=TOKEN)) as s:
        good = OpenAI(base_url=s.url + "/v1", api_key=TOKEN, max_retries=0, timeout=30)
        resp = good.chat.completions.create(model="m", messages=_body()["messages"])
        assert resp.choices[0].message.content == "Center."
        bad = OpenAI(base_url=s.url + "/v1", api_key="guess", max_retries=0, timeout=30)
        with pytest.raises(openai.AuthenticationError) as exc:
            bad.chat.completions.create(model="m", messages=_body()["messages"])
        assert exc.value.status_code == 401 and exc.value.body["code"] == "invalid_api_key"


def test_bind_refusal_only_for_non_loopback_without_token():
    env = "WAFERSAGE_SERVE_API_KEY"
    for host in ["127.0.0.1", "127.0.0.2", "::1", "localhost"]:
        assert bind_refusal(host, None, env) is None, host
    for host in ["0.0.0.0", "::", "10.1.2.3", "fab-gpu-01"]:
        assert bind_refusal(host, None, env) == (
            f"refusing to serve on {host} without authentication: set $WAFERSAGE_SERVE_API_KEY to a "
            "bearer token (or bind to 127.0.0.1)"
        )
        assert bind_refusal(host, TOKEN, env) is None and bind_refusal(host, None, env, True) is None


def test_serve_command_refuses_0_0_0_0_without_a_token(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from wafersage.cli import app

    params = tmp_path / "params.yaml"
    params.write_text("serve:\n  api_key_env: WS_TEST_TOKEN\n  max_tokens: 4\n")
    monkeypatch.delenv("WS_TEST_TOKEN", raising=False)
    loaded = []
    monkeypatch.setattr(
        "wafersage.serving.predictor.load_predictor", lambda *a, **k: loaded.append(a) or RecordingPredictor()
    )
    served = []
    monkeypatch.setattr("wafersage.serving.app.serve", lambda *a: served.append(a))
    args = ["serve", "--host", "0.0.0.0", "--model", str(tmp_path), "--params", str(params)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and not loaded and not served
    assert r.stderr == (
        "wafersage: error: refusing to serve on 0.0.0.0 without authentication: set $WS_TEST_TOKEN to a "
        "bearer token (or bind to 127.0.0.1)\n"
    )
    r = CliRunner().invoke(app, [*args, "--insecure-no-auth"])
    assert r.exit_code == 0 and "WARNING: no authentication on 0.0.0.0" in r.stderr and len(served) == 1
    monkeypatch.setenv("WS_TEST_TOKEN", TOKEN)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    server_app, host, _, limits = served[-1]
    assert host == "0.0.0.0" and limits.max_tokens == 4

    from fastapi.testclient import TestClient

    with TestClient(server_app) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_docs_are_off_unless_enabled():
    from fastapi.testclient import TestClient

    with TestClient(create_app(RecordingPredictor())) as c:
        for path in ["/docs", "/redoc", "/openapi.json"]:
            assert (c.get(path).status_code, c.get(path).json()) == (404, {"detail": "Not Found"}), path
    with TestClient(create_app(RecordingPredictor(), docs=True)) as c:
        assert [c.get(p).status_code for p in ["/docs", "/redoc", "/openapi.json"]] == [200, 200, 200]


class BrokenHealth(RecordingPredictor):
    @property
    def image_size(self) -> int:
        raise OSError("cannot read /srv/models/secret-weights.bin")


def test_internal_errors_get_a_generic_body_and_the_detail_goes_to_the_log(caplog):
    from fastapi.testclient import TestClient

    secret = "CUDA failure in /srv/models/secret-weights.bin"
    app = create_app(RecordingPredictor(fail=RuntimeError(secret)))
    with caplog.at_level("ERROR", logger="wafersage.serving"), TestClient(app) as c:
        r = c.post(CHAT, json=_body())
    rid = r.headers["x-request-id"]
    assert r.status_code == 500 and rid.startswith("req_") and len(rid) == 36
    assert r.json() == {
        "error": {
            "message": "internal server error",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
            "request_id": rid,
        }
    }
    assert "secret" not in r.text and "RuntimeError" not in r.text
    assert any(rid in rec.getMessage() and secret in caplog.text for rec in caplog.records)
    with TestClient(create_app(BrokenHealth()), raise_server_exceptions=False) as c:
        r = c.get("/health")
    assert r.status_code == 500 and r.json()["error"]["message"] == "internal server error"
    assert "secret" not in r.text and r.json()["error"]["request_id"] == r.headers["x-request-id"]


def test_deep_json_is_400_before_parsing():
    from fastapi.testclient import TestClient

    too_deep = _err("invalid_request_error", "invalid_json", "JSON nested deeper than 64 levels")
    with TestClient(create_app(RecordingPredictor())) as c:
        r = c.post(CHAT, content=b"[" * 50_000 + b"]" * 50_000)
        assert (r.status_code, r.json()) == (400, too_deep)
        r = c.post(CHAT, content=b'{"messages": ' + b"[" * 65 + b"]" * 65 + b"}")
        assert (r.status_code, r.json()) == (400, too_deep)
        r = c.post(CHAT, content=b"{" * 50_000)  # unbalanced: still refused before the parser
        assert (r.status_code, r.json()) == (400, too_deep)
        r = c.post(CHAT, json=_body(question="[{" * 500 + " what type?"))  # brackets in strings count not
        assert r.status_code == 200
        assert c.get("/health").status_code == 200
    # a chat request is 6 deep (object, messages, message, content, part, image_url)
    with TestClient(create_app(RecordingPredictor(), ServeLimits(max_json_depth=6))) as c:
        assert c.post(CHAT, json=_body()).status_code == 200
    with TestClient(create_app(RecordingPredictor(), ServeLimits(max_json_depth=5))) as c:
        r = c.post(CHAT, json=_body())
        assert r.status_code == 400 and r.json()["error"]["message"] == "JSON nested deeper than 5 levels"


def test_json_depth_ignores_strings_and_escapes():
    assert json_depth(b"") == json_depth(b"1") == json_depth(b'"[[["') == 0
    assert json_depth(json.dumps({"a": '"[[[\\', "b": [[1], {"c": "]]]"}]}).encode()) == 3
    assert json_depth(b"[" * 50_000 + b"]" * 50_000) == 50_000


def test_timed_out_request_is_dropped_from_the_queue_and_never_generated():
    rec = RecordingPredictor(delay=1.0)
    limits = ServeLimits(max_batch=1, batch_wait_ms=0, timeout_s=0.4)

    async def two(base: str) -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            first = asyncio.create_task(c.post(CHAT, json=_body("first")))
            await asyncio.sleep(0.15)  # "first" is being generated, "second" waits in the queue
            second = await c.post(CHAT, json=_body("second"))
            return [(await first).status_code, second.status_code]

    with Server(create_app(rec, limits), limits) as s:
        assert asyncio.run(two(s.url)) == [504, 504]
        time.sleep(1.2)  # the worker finishes "first" and takes the next queued job
        rec.delay = 0.0
        r = httpx.post(s.url + CHAT, json=_body("third"), timeout=30)
        assert r.status_code == 200
        assert rec.calls == [["first"], ["third"]]  # "second" timed out in the queue: never generated


def _raw(port: int, data: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<open>")
    return b"".join(chunks)


def test_slow_headers_slow_bodies_and_huge_headers_are_cut_off():
    limits = ServeLimits(header_timeout_s=0.5, read_timeout_s=0.5, max_header_bytes=4096)
    with Server(create_app(RecordingPredictor(), limits), limits) as s:
        t = time.time()
        assert _raw(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\n") == b""  # head never finished
        assert time.time() - t < 3
        assert _raw(s.port, b"") == b""  # connected, sent nothing
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        reply = _raw(s.port, head + b'{"model"')  # body never finished
        assert reply.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in reply
        reply = _raw(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000)  # head > cap
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        reply = _raw(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 ") and b'"status":"ok"' in reply


def test_keep_alive_connection_trickling_a_second_head_is_closed():
    limits = ServeLimits(header_timeout_s=0.5, keep_alive_s=30)
    with (
        Server(create_app(RecordingPredictor(), limits), limits) as s,
        socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while not reply.endswith(b"}"):  # the whole first response (head and JSON body)
            reply += sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 ")
        t = time.time()
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # then nothing more
        assert sock.recv(65536) == b"" and time.time() - t < 3  # closed long before keep-alive


def test_fuzzed_requests_get_an_answer_or_a_4xx_never_a_5xx(monkeypatch):
    """300 seeded fuzz requests through the app: 200 exactly when the parser accepts the request,
    otherwise a 4xx OpenAI error body; the server answers /health afterwards."""
    import importlib

    from fastapi.testclient import TestClient

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    fuzz = importlib.import_module("fuzz_requests")
    rng, seeds = np.random.default_rng(11), fuzz.image_seeds()
    predictor = RecordingPredictor()
    statuses = []
    with TestClient(create_app(predictor, fuzz.LIMITS)) as c:
        for i in range(300):
            body = fuzz.case_body(rng, fuzz.STRATEGIES[i % len(fuzz.STRATEGIES)], seeds)
            r = c.post(CHAT, content=body, headers={"content-type": "application/json"})
            expected_ok = fuzz.run_case(body) == "ok"
            assert (r.status_code == 200) == expected_ok, (i, r.status_code, r.text[:200])
            if not expected_ok:
                assert 400 <= r.status_code < 500 and r.json()["error"]["message"], (i, r.text[:200])
            statuses.append(r.status_code)
        assert c.get("/health").json()["served"] == statuses.count(200)
    assert 30 <= statuses.count(200) <= 150 and len(predictor.calls) >= 1
