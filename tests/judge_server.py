"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for the judge and stage tests.

Not a mock of the client: a real HTTP server speaking /v1/chat/completions, whose
replies (text, logprobs, HTTP errors, and raw bodies: truncated or invalid JSON, a
body cut off before its declared length) a test scripts, so retries, fallbacks and
request counts go through the real `openai` client and network stack. The real
model server (llama.cpp) is exercised in tests/feedback/test_judge_server.py.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class RawBody:
    """A reply body sent byte for byte, not JSON-encoded by the server."""

    data: bytes
    content_type: str = "application/json"
    # The Content-Length header; None: len(data). Larger than len(data): the connection is
    # closed after `data`, a reply cut off mid-body.
    content_length: int | None = None


Reply = tuple[int, "dict[str, Any] | list[Any] | RawBody"]


def chat_reply(text: str, top: list[tuple[str, float]] | None = None, prompt_tokens: int = 20,
               completion_tokens: int = 1) -> Reply:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": "stop", "logprobs": None}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": top[0][0], "logprob": top[0][1], "bytes": None,
                                           "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}
                                                            for t, lp in top]}]}
    return 200, {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "scripted",
                 "choices": [choice], "usage": {"prompt_tokens": prompt_tokens,
                                                "completion_tokens": completion_tokens,
                                                "total_tokens": prompt_tokens + completion_tokens}}


def error_reply(status: int, message: str = "scripted error") -> Reply:
    return status, {"error": {"message": message, "type": "server_error", "code": status}}


def raw_reply(body: str | bytes, status: int = 200, content_type: str = "application/json",
              content_length: int | None = None) -> Reply:
    """`body` exactly as given, e.g. `'{"choices": [{"mess'` (a 200 cut mid-JSON) or `'{}'`."""
    data = body.encode() if isinstance(body, str) else body
    return status, RawBody(data, content_type, content_length)


def truncated_reply(reply: Reply, keep: float = 0.5) -> Reply:
    """`reply`'s JSON cut after `keep` of its bytes, sent as a complete 200 (Content-Length matching)."""
    status, payload = reply
    data = json.dumps(payload).encode()
    return raw_reply(data[:max(1, int(len(data) * keep))], status)


def cut_off_reply(reply: Reply, keep: float = 0.5) -> Reply:
    """`reply` with its full Content-Length declared but the connection closed after `keep` of it."""
    status, payload = reply
    data = json.dumps(payload).encode()
    return raw_reply(data[:max(1, int(len(data) * keep))], status, content_length=len(data))


class ScriptedServer:
    """`script(body, n)` -> (status, json) for the n-th request (0-based); bodies are kept."""

    def __init__(self, script: Callable[[dict[str, Any], int], Reply]) -> None:
        self.script = script
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    n = len(server.bodies)
                    server.bodies.append(body)
                status, payload = server.script(body, n)
                raw = payload if isinstance(payload, RawBody) else RawBody(json.dumps(payload).encode())
                length = len(raw.data) if raw.content_length is None else raw.content_length
                self.send_response(status)
                self.send_header("Content-Type", raw.content_type)
                self.send_header("Content-Length", str(length))
                if length != len(raw.data):
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(raw.data)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that gives up closes its connections mid-reply; http.server would print
                # that traceback to stderr, possibly after the CLI's own one error line that tests read.
                server.dropped_connections += 1

        self.dropped_connections = 0
        self._httpd = Server(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits for it, once per test server.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def last_user_message(body: dict[str, Any]) -> str:
    return body["messages"][-1]["content"]
