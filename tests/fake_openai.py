"""A chat-completions endpoint on 127.0.0.1 for tests of the OpenAI-compatible clients (the one
network boundary where a fake is allowed). The test decides each reply with ``respond``."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: ``respond(server, body)`` returns the assistant's text, or ``(status, raw body bytes)``.
Respond = Callable[["FakeChatServer", dict], "str | tuple[int, bytes]"]


def completion(model: str, content: str) -> bytes:
    """An OpenAI chat.completion body carrying ``content``."""
    return json.dumps(
        {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
            ],
        }
    ).encode()


class FakeChatServer:
    """Records each request body (``requests``) and Authorization header (``auth``); ``mode`` is
    free for the test's ``respond`` to read."""

    def __init__(self, respond: Respond) -> None:
        self.mode = "good"
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.auth.append(self.headers.get("Authorization"))
                reply = respond(outer, body)
                status, data = (200, completion(body["model"], reply)) if isinstance(reply, str) else reply
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
