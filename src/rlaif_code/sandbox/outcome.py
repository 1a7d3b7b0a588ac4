"""What one sandboxed run came to: a `RunResult` built from the exit status and the
result file the bootstrap wrote, with the resource limit that stopped it when one did.
"""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "exception", "timeout", "killed", "leaked", "error"]


@dataclass
class RunResult:
    status: Status
    exit_code: int | None = None
    signal: int | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    missing_module: str | None = None  # top-level module of a ModuleNotFoundError
    limit: str | None = None  # cpu / memory / file_size / processes / open_files, when one was hit
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    leaked_processes: int = 0
    # hermetic mode: the model loads answered ([entry, id, verdict]) and the inputs stood in for missing
    # ones ([what, target, kind]: "file"/"url"/"url body"/"dataset"/"column", the path/URL/id, what it held)
    hub_calls: list[Any] = field(default_factory=list)
    stand_ins: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def short(self) -> str:
        if self.status == "exception":
            return f"{self.exception_type}: {self.exception_message or ''}"[:200]
        if self.status == "killed":
            return f"killed by signal {self.signal}" + (f" ({self.limit} limit)" if self.limit else "")
        return self.status


_KILLED_BY: dict[int, str] = {signal.SIGXCPU: "cpu", signal.SIGXFSZ: "file_size"}


def _limit_of_exception(exc_type: str | None, message: str | None) -> str | None:
    if exc_type == "MemoryError":
        return "memory"
    text = message or ""
    if exc_type in ("BlockingIOError", "OSError") and ("Resource temporarily unavailable" in text
                                                      or "[Errno 11]" in text):
        return "processes"
    if "Too many open files" in text:
        return "open_files"
    if "File too large" in text:
        return "file_size"
    return None


def tail(path: Path, chars: int) -> str:
    """The last `chars` characters of a (possibly huge, possibly not UTF-8) output file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            handle.seek(max(0, size - chars * 4))
            data = handle.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")[-chars:]


def interpret(returncode: int, answer: dict[str, Any] | None, timed_out: bool, duration: float,
              stdout: str, stderr: str) -> RunResult:
    """The run's result: the timeout first, then the bootstrap's answer, then how the process died."""
    base = {"stdout": stdout, "stderr": stderr, "duration": round(duration, 3)}
    if timed_out:
        return RunResult("timeout", exit_code=None, signal=signal.SIGKILL, **base)
    if answer is not None and "status" in answer:
        status = answer["status"]
        exc_type, message = answer.get("exception_type"), answer.get("exception_message")
        return RunResult(status, exit_code=returncode, exception_type=exc_type, exception_message=message,
                         missing_module=answer.get("missing_module"),
                         limit=_limit_of_exception(exc_type, message),
                         leaked_processes=int(answer.get("leaked_processes", 0)),
                         hub_calls=list(answer.get("hub_calls") or []), stand_ins=list(answer.get("stand_ins") or []),
                         **base)
    sig = -returncode if returncode < 0 else (returncode - 128 if returncode > 128 else None)
    if sig is not None:
        return RunResult("killed", exit_code=returncode, signal=sig, limit=_KILLED_BY.get(sig), **base)
    return RunResult("error", exit_code=returncode, exception_type="SandboxError",
                     exception_message=(stderr.strip().splitlines() or ["the sandbox gave no result"])[-1],
                     **base)
