"""``wafersage serve``: an OpenAI-compatible ``/v1/chat/completions`` endpoint for one model.

A request carries one user message with a text part (the question) and one ``image_url`` part whose
URL is a ``data:`` URL (PNG as OpenAI clients send it, or ``application/x-npy`` for a canonical
map), read by :func:`wafersage.serving.images.model_image` as ``ask`` and the pyfunc read it: a
die-level grayscale PNG or a ``.npy`` map is rendered, a rendered picture kept. Requests go
through a bounded queue (full -> 429) to one worker that answers them in dynamic batches (up to
``max_batch``, waiting ``batch_wait_ms`` for company), greedily; a request not answered within
``timeout_s`` gets 504. Bad requests get a 4xx with an OpenAI-style error body:
413 (body over ``max_body_bytes``), 400 (malformed JSON, no user message, missing/extra image,
non-data or bad data URL, image over ``max_image_side``, empty or overlong question, bad
``max_tokens``, ``stream``/``n > 1``, JSON nested deeper than ``max_json_depth``), 408 (body not
read within ``read_timeout_s``), 429 (queue full). ``/health`` reports the model and the queue.

Trust: with a bearer token (``api_key``) every endpoint but ``/health`` answers 401 without
``Authorization: Bearer <token>``; ``/docs``, ``/redoc`` and ``/openapi.json`` exist only with
``docs=True``; a 500 carries a fixed message and a request id, the exception only goes to the log.
A request that timed out is dropped from the queue before it is generated. uvicorn runs with h11,
a header-read timeout, a header size cap, a keep-alive timeout and a connection cap.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from wafersage.config import ServeLimits
from wafersage.errors import WaferSageError
from wafersage.serving.images import model_image

log = logging.getLogger("wafersage.serving")

HEALTH_PATH = "/health"
INTERNAL_ERROR_MESSAGE = "internal server error"


class RequestError(Exception):
    """A client error: HTTP status, OpenAI error ``code`` and message."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


def error_response(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    """An OpenAI-style error body."""
    kind = {429: "rate_limit_error", 504: "timeout_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def internal_error(exc: BaseException) -> JSONResponse:
    """A generic 500: fixed message and a request id; the exception goes to the log only."""
    request_id = f"req_{uuid.uuid4().hex}"
    log.error("request %s failed", request_id, exc_info=(type(exc), exc, exc.__traceback__))
    body = {
        "error": {
            "message": INTERNAL_ERROR_MESSAGE,
            "type": "server_error",
            "param": None,
            "code": "internal_error",
            "request_id": request_id,
        }
    }
    return JSONResponse(body, status_code=500, headers={"x-request-id": request_id})


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback bind address (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(
    host: str, api_key: str | None, api_key_env: str, insecure_no_auth: bool = False
) -> str | None:
    """The reason not to start (a non-loopback bind without a token), or None."""
    if api_key or insecure_no_auth or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} without authentication: set ${api_key_env} to a bearer token "
        "(or bind to 127.0.0.1)"
    )


class BearerAuth:
    """ASGI middleware: 401 for any HTTP request but ``/health`` without ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] == HEALTH_PATH:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization")
        if header is None:
            code, message = "missing_api_key", "missing bearer token: send Authorization: Bearer <token>"
        else:
            scheme, _, given = header.partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
                await self.app(scope, receive, send)
                return
            code, message = "invalid_api_key", "invalid bearer token"
        response = error_response(401, code, message)
        response.headers["www-authenticate"] = "Bearer"
        await response(scope, receive, send)


@dataclass
class _Job:
    image: Any
    question: str
    max_tokens: int
    future: asyncio.Future


class Batcher:
    """Bounded queue + one worker answering requests in dynamic batches on a single thread."""

    def __init__(self, predictor: Any, limits: ServeLimits) -> None:
        self.predictor, self.limits = predictor, limits
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=limits.max_pending)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wafersage-gen")
        self.served = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, image: Any, question: str, max_tokens: int) -> str:
        """The answer; :class:`RequestError` 429 when the queue is full, 504 on timeout."""
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Job(image, question, max_tokens, fut))
        except asyncio.QueueFull:
            raise RequestError(429, "queue_full", "server busy: request queue is full, retry later") from None
        try:
            return await asyncio.wait_for(fut, self.limits.timeout_s)
        except TimeoutError:
            raise RequestError(504, "timeout", f"no answer within {self.limits.timeout_s:g} s") from None

    async def _collect(self, carry: list[_Job]) -> list[_Job]:
        """The next batch (one ``max_tokens``); jobs whose request has gone (timed out) are dropped."""
        carry[:] = [j for j in carry if not j.future.done()]
        first = carry.pop(0) if carry else await self.queue.get()
        if first.future.done():
            return []
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.batch_wait_ms / 1000
        while len(batch) < self.limits.max_batch:
            same = [j for j in carry if j.max_tokens == first.max_tokens]
            if same:
                carry.remove(same[0])
                batch.append(same[0])
                continue
            remaining = deadline - loop.time()
            try:
                job = (
                    self.queue.get_nowait()
                    if remaining <= 0
                    else await asyncio.wait_for(self.queue.get(), remaining)
                )
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if job.future.done():
                continue
            (batch if job.max_tokens == first.max_tokens else carry).append(job)
        return [j for j in batch if not j.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: list[_Job] = []
        while True:
            batch = await self._collect(carry)
            if not batch:
                continue
            try:
                answers = await loop.run_in_executor(
                    self.executor,
                    self.predictor.answer,
                    [j.image for j in batch],
                    [j.question for j in batch],
                    batch[0].max_tokens,
                )
            except Exception as exc:  # noqa: BLE001 - reported to each waiting request as a 500
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(exc)
                continue
            self.served += len(batch)
            for j, a in zip(batch, answers, strict=True):
                if not j.future.done():
                    j.future.set_result(a)


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes before reading it all, (408) a
    body not read within ``timeout_s`` and (400) a client gone before sending it all."""
    if timeout_s is not None:
        try:
            async with asyncio.timeout(timeout_s):
                return await read_body(request, limit)
        except TimeoutError:
            raise RequestError(
                408, "request_timeout", f"request body not read within {timeout_s:g} s"
            ) from None
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestError(413, "request_too_large", f"request body over {limit} bytes")
        except ValueError:
            raise RequestError(400, "bad_content_length", "Content-Length is not an integer") from None
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestError(413, "request_too_large", f"request body over {limit} bytes")
    except ClientDisconnect:
        raise RequestError(400, "client_disconnected", "the client closed the connection") from None
    return bytes(body)


def _parts(content: Any) -> tuple[str, list[Any]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(400, "invalid_content", "message content must be a string or a list of parts")
    texts, images = [], []
    for part in content:
        if not isinstance(part, dict) or "type" not in part:
            raise RequestError(400, "invalid_content", "each content part must be an object with a type")
        if part["type"] == "text":
            texts.append(str(part.get("text", "")))
        elif part["type"] == "image_url":
            images.append(part.get("image_url"))
        else:
            raise RequestError(400, "invalid_content", f"unsupported content part type {part['type']!r}")
    return " ".join(t.strip() for t in texts if t.strip()), images


_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_DEPTH_STEP = [1 if c in b"[{" else -1 for c in range(256)]


def json_depth(body: bytes) -> int:
    """Maximum nesting depth of arrays/objects in a JSON text (brackets inside strings ignored),
    computed without parsing; an unterminated string only makes it larger."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def parse_chat_request(body: bytes, limits: ServeLimits) -> tuple[str, Any, int]:
    """``(question, image_url, max_tokens)`` of a chat request, or a :class:`RequestError` 400."""
    if json_depth(body) > limits.max_json_depth:
        raise RequestError(400, "invalid_json", f"JSON nested deeper than {limits.max_json_depth} levels")
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "invalid_json", f"malformed JSON: {exc}") from None
    if not isinstance(req, dict):
        raise RequestError(400, "invalid_json", "request body must be a JSON object")
    if req.get("stream"):
        raise RequestError(400, "unsupported", "stream=true is not supported", "stream")
    if req.get("n", 1) not in (1, None):
        raise RequestError(400, "unsupported", "only n=1 is supported", "n")
    msgs = req.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError(400, "missing_messages", "messages must be a non-empty list", "messages")
    users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise RequestError(400, "missing_user_message", "no user message", "messages")
    question, images = _parts(users[-1].get("content"))
    if not images:
        raise RequestError(400, "missing_image", "the user message has no image_url part", "messages")
    if len(images) > 1:
        raise RequestError(400, "too_many_images", "send exactly one wafer image per request", "messages")
    if not question:
        raise RequestError(400, "missing_question", "the user message has no text question", "messages")
    if len(question) > limits.max_question_chars:
        raise RequestError(400, "question_too_long", f"question over {limits.max_question_chars} characters")
    url = images[0].get("url") if isinstance(images[0], dict) else images[0]
    if not isinstance(url, str) or not url.startswith("data:"):
        raise RequestError(
            400, "invalid_image_url", "image_url must be a data: URL (the server fetches nothing)", "messages"
        )
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens")) or limits.max_tokens
    if (
        not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or not 1 <= max_tokens <= limits.max_tokens
    ):
        raise RequestError(400, "invalid_max_tokens", f"max_tokens must be an integer 1..{limits.max_tokens}")
    return question, url, max_tokens


def chat_inputs(body: bytes, limits: ServeLimits, image_size: int) -> tuple[str, Any, int]:
    """``(question, model image, max_tokens)`` of a chat request body: everything the endpoint does
    before the model, or a :class:`RequestError` 4xx."""
    question, url, max_tokens = parse_chat_request(body, limits)
    try:
        image = model_image(url, image_size, "image_url", limits.max_image_side)
    except WaferSageError as exc:
        raise RequestError(400, "invalid_image", str(exc), "messages") from None
    return question, image, max_tokens


def completion(model_id: str, answer: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def create_app(
    predictor: Any,
    limits: ServeLimits | None = None,
    model_id: str = "wafersage",
    api_key: str | None = None,
    docs: bool = False,
) -> FastAPI:
    """The FastAPI app serving ``predictor`` (anything with ``answer(images, questions, max_tokens)``,
    ``image_size`` and ``count_tokens``); ``api_key``: the bearer token required on every endpoint
    but ``/health`` (None: none); ``docs``: serve ``/docs``, ``/redoc`` and ``/openapi.json``."""
    limits = limits or ServeLimits()
    batcher = Batcher(predictor, limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        batcher.start()
        yield
        await batcher.stop()

    paths = {"docs_url": "/docs", "redoc_url": "/redoc", "openapi_url": "/openapi.json"}
    app = FastAPI(title="wafersage", lifespan=lifespan, **(paths if docs else dict.fromkeys(paths)))
    app.state.batcher = batcher
    if api_key:
        app.add_middleware(BearerAuth, token=api_key)

    async def on_error(_: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc)

    app.add_exception_handler(Exception, on_error)

    @app.get(HEALTH_PATH)
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_id,
            "image_size": predictor.image_size,
            "queued": batcher.queue.qsize(),
            "max_pending": limits.max_pending,
            "served": batcher.served,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": "wafersage"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, limits.max_body_bytes, limits.read_timeout_s)
            question, image, max_tokens = chat_inputs(body, limits, predictor.image_size)
            answer = await batcher.submit(image, question, max_tokens)
        except RequestError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.param)
        except Exception as exc:  # noqa: BLE001 - one generic JSON 500, the server stays up
            return internal_error(exc)
        return JSONResponse(
            completion(model_id, answer, predictor.count_tokens(question), predictor.count_tokens(answer))
        )

    return app


def h11_protocol(header_timeout_s: float) -> type:
    """uvicorn's h11 protocol closing a connection that has not sent a complete request head
    within ``header_timeout_s`` of connecting or of its previous response (slow-header clients)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self._idle() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._idle():
                self._arm()
            super().data_received(data)
            if not self._idle():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutH11


def server_config(app: FastAPI, host: str, port: int, limits: ServeLimits | None = None, **kw: Any) -> Any:
    """The ``uvicorn.Config`` for ``app``: h11 with a header-read timeout, header size cap,
    keep-alive timeout and connection cap from ``limits``."""
    import uvicorn

    limits = limits or ServeLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=h11_protocol(limits.header_timeout_s),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_keep_alive=int(max(1, limits.keep_alive_s)),
        limit_concurrency=limits.max_connections,
        **{"log_level": "warning", **kw},
    )


def serve(app: FastAPI, host: str, port: int, limits: ServeLimits | None = None) -> None:
    """Run ``app`` with uvicorn (blocking)."""
    import uvicorn

    uvicorn.Server(server_config(app, host, port, limits)).run()
