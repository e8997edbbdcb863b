"""A local OpenAI-compatible chat-completions endpoint for testing judges without a network."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


class _QuietServer(HTTPServer):
    """An HTTPServer that stays silent when a client hung up first (a judge's timeout in a hang test)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ChatCompletionsServer:
    """Serves ``POST .../chat/completions`` on 127.0.0.1 (a free port) while used as a
    context manager; ``url`` is the ``base_url`` to give a judge.

    ``reply(prompt, n)`` answers the n-th request (1-based) whose last message is
    ``prompt``: a string is the assistant's content, an int is an HTTP error status (its
    body echoes the Authorization header, as careless servers do, so tests can check a
    key never leaks from an error), bytes are sent as the whole body of a 200 reply (a
    reply that is not JSON), a dict is sent as the JSON body of a 200 reply (a reply of the
    wrong shape). A ``reply`` that sleeps is an endpoint that hangs. ``requests`` (path and JSON body), ``auth``
    (Authorization headers) and ``prompts`` record what was asked.
    """

    def __init__(self, reply: Callable[[str, int], str | int]) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.prompts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                prompt = body["messages"][-1]["content"]
                outer.requests.append({"path": self.path, **body})
                outer.auth.append(self.headers.get("Authorization", ""))
                outer.prompts.append(prompt)
                content = reply(prompt, len(outer.prompts))
                raw: bytes | None = None
                if isinstance(content, bytes):
                    status, raw = 200, content
                elif isinstance(content, dict):
                    status, payload = 200, content
                elif isinstance(content, int):
                    status, payload = content, {"error": {"message": f"bad key {self.headers.get('Authorization')}"}}
                else:
                    status, payload = 200, {
                        "id": "chatcmpl-test", "object": "chat.completion", "created": 0,
                        "model": body.get("model", "m"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ChatCompletionsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
