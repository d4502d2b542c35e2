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
``max_tokens``, ``stream``/``n > 1``), 429 (queue full). ``/health`` reports the model and the queue.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from wafersage.errors import WaferSageError
from wafersage.serving.images import model_image


@dataclass(frozen=True)
class ServeLimits:
    """Request limits and queueing of the server (params.yaml ``serve``)."""

    max_body_bytes: int = 2_000_000
    max_image_side: int = 1024
    max_question_chars: int = 2000
    max_tokens: int = 64
    max_pending: int = 64
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    timeout_s: float = 60.0

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> ServeLimits:
        """Limits from a params section (unknown keys are an error)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(p) - known
        if unknown:
            raise WaferSageError("params.yaml", "unknown key in serve", ", ".join(sorted(unknown)))
        return cls(**p)


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
        first = carry.pop(0) if carry else await self.queue.get()
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


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestError(413, "request_too_large", f"request body over {limit} bytes")
        except ValueError:
            raise RequestError(400, "bad_content_length", "Content-Length is not an integer") from None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, "request_too_large", f"request body over {limit} bytes")
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


def parse_chat_request(body: bytes, limits: ServeLimits) -> tuple[str, Any, int]:
    """``(question, image_url, max_tokens)`` of a chat request, or a :class:`RequestError` 400."""
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


def create_app(predictor: Any, limits: ServeLimits | None = None, model_id: str = "wafersage") -> FastAPI:
    """The FastAPI app serving ``predictor`` (anything with ``answer(images, questions, max_tokens)``,
    ``image_size`` and ``count_tokens``)."""
    limits = limits or ServeLimits()
    batcher = Batcher(predictor, limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="wafersage", lifespan=lifespan)
    app.state.batcher = batcher

    @app.get("/health")
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
            body = await read_body(request, limits.max_body_bytes)
            question, url, max_tokens = parse_chat_request(body, limits)
            try:
                image = model_image(url, predictor.image_size, "image_url", limits.max_image_side)
            except WaferSageError as exc:
                raise RequestError(400, "invalid_image", str(exc), "messages") from None
            answer = await batcher.submit(image, question, max_tokens)
        except RequestError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.param)
        except Exception as exc:  # noqa: BLE001 - one JSON 500, the server stays up
            return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")
        return JSONResponse(
            completion(model_id, answer, predictor.count_tokens(question), predictor.count_tokens(answer))
        )

    return app


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run ``app`` with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=30)
