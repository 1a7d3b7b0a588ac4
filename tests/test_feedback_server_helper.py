"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for the judge and stage tests.

Not a mock of the client: a real HTTP server speaking /v1/chat/completions, whose
replies (text, logprobs, HTTP errors) a test scripts, so retries, fallbacks and
request counts go through the real `openai` client and network stack. The real
model server (llama.cpp) is exercised in tests/test_judge_server.py.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Reply = tuple[int, dict[str, Any]]


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
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

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


def test_scripted_server_speaks_the_openai_protocol() -> None:
    import openai

    with ScriptedServer(lambda body, n: chat_reply("Yes", [("Yes", -0.1), ("No", -2.4)])) as server:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        client.close()
    assert reply.choices[0].message.content == "Yes"
    assert reply.choices[0].logprobs.content[0].top_logprobs[1].token == "No"
    assert reply.usage.prompt_tokens == 20
    assert server.bodies[0]["messages"][0]["content"] == "hi"
