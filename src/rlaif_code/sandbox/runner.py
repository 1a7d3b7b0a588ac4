"""Run untrusted code strings in a fresh, isolated, resource-limited interpreter.

Each snippet gets its own `python -I` process (the exec env's interpreter, never
ours) in a temporary working directory that is removed afterwards, with a scrubbed
environment and:

* isolation, picked by `detect_isolation()`:
  - `bwrap` (bubblewrap; preferred): new network, PID, IPC and UTS namespaces; a
    root filesystem that holds only /usr, /etc, the interpreter and the exec env
    (read-only) and the working directory (writable); /tmp, the user's home and
    every other path do not exist inside. `--die-with-parent`, new session.
  - `unshare` (util-linux): new network and PID namespaces only. The filesystem is
    then protected only by running as an unprivileged uid (see below).
  - `none`: refused unless the caller passes `allow_unsandboxed=True`. Generated code
    is never run unsandboxed silently.
* a PID namespace, so when the snippet's main process ends (or is killed) the kernel
  kills everything it started: double-forked daemons cannot outlive the run.
* an unprivileged identity: run as root, the bootstrap drops to a random uid before
  the snippet starts (RLIMIT_NPROC does not bind uid 0, so without this a fork bomb
  would be limited only by the timeout); run as a normal user, a user namespace.
* rlimits set in `preexec_fn`: CPU seconds, address space, file size (which also
  caps stdout/stderr: they go to files), processes, open files, no core dumps.
* a wall-clock timeout that SIGKILLs the process group (start_new_session=True); the
  sandbox's PID-1 dies with it and takes the namespace down.

A snippet that finishes but leaves processes behind is reported as `leaked` (they are
killed with the namespace). The job description reaches the bootstrap on stdin, so
the snippet cannot read where its result will be written.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

from rlaif_code.sandbox.isolation import (
    Interpreter,
    Isolation,
    bwrap_args,
    detect_isolation,
    is_root,
    readable_by_others,
    unshare_prefix,
)
from rlaif_code.sandbox.outcome import RunResult, Status, interpret, tail

HERMETIC_DIR = Path(__file__).with_name("hermetic")

HubMode = Literal["plain", "hermetic", "real"]


class SandboxUnavailable(RuntimeError):
    """No isolation mechanism works here and running unsandboxed was not allowed."""


@dataclass
class Limits:
    timeout: float = 20.0  # wall-clock seconds
    cpu_seconds: int = 60
    memory_mb: int = 8192  # address space; importing torch alone maps ~2 GiB
    file_size_mb: int = 64  # any file written, stdout/stderr included
    processes: int = 64
    open_files: int = 256
    tail_chars: int = 4000  # how much of stdout/stderr is kept


def _rmtree(path: Path) -> None:
    def make_writable(func: Callable[..., Any], target: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    # Processes of a killed sandbox can take a moment to die after bwrap returns, and may
    # still write there meanwhile: try again briefly rather than leave the folder behind.
    for _ in range(50):
        shutil.rmtree(path, onerror=make_writable)
        if not os.path.lexists(path):
            return
        time.sleep(0.1)


def _default_hf_cache() -> Path:
    env = os.environ.get("HF_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "huggingface"


def _environment(workdir: Path, prefix: Path, hf_cache: Path | None) -> dict[str, str]:
    return {
        "PATH": f"{prefix / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir), "TMPDIR": str(workdir), "USER": "sandbox", "LOGNAME": "sandbox",
        "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "XDG_CACHE_HOME": str(workdir / ".cache"), "MPLCONFIGDIR": str(workdir / ".cache" / "mpl"),
        "TORCH_HOME": str(workdir / ".cache" / "torch"), "MPLBACKEND": "Agg",
        # One core each: parallelism comes from running several sandboxes.
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "TF_CPP_MIN_LOG_LEVEL": "2",
        # tensorflow_hub's KerasLayer is a Keras 2 layer: tf.keras must be Keras 2 too.
        "TF_USE_LEGACY_KERAS": "1",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1",
        "HF_HOME": str(hf_cache) if hf_cache else str(workdir / ".cache" / "huggingface"),
    }


def _preexec(limits: Limits) -> Callable[[], None]:
    mib = 1024 * 1024

    def apply() -> None:
        # Only async-signal-safe-ish work here: we fork from worker threads.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mib, limits.memory_mb * mib))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb * mib, limits.file_size_mb * mib))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # Counted per uid: binds the dropped uid (root) or the user's namespace (non-root).
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    return apply


def _read_answer(result_path: Path) -> dict[str, Any] | None:
    if not result_path.is_file():
        return None
    try:
        return json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Sandbox:
    """Runs snippets with one interpreter under one isolation, mode and set of limits.

    Use as a context manager (or call `close()`): it owns a read-only support folder
    holding the bootstrap, the hermetic hooks and the known hub ids.
    """

    def __init__(self, python: str | Path, *, limits: Limits | None = None, mode: HubMode = "plain",
                 known_ids: dict[str, Any] | None = None, hf_cache: str | Path | None = None,
                 isolation: Isolation | Literal["auto"] = "auto", allow_unsandboxed: bool = False,
                 temp_root: str | Path | None = None) -> None:
        self.limits = limits or Limits()
        self.mode = mode
        self.interpreter = Interpreter.inspect(python)
        self.isolation: Isolation = detect_isolation() if isolation == "auto" else isolation
        if self.isolation == "none" and not allow_unsandboxed:
            raise SandboxUnavailable(
                "no sandbox is available here (install bubblewrap: `apt-get install bubblewrap`, or make "
                "`unshare --net --pid --fork true` work); generated code is never run unsandboxed unless "
                "you opt in explicitly: Sandbox(..., allow_unsandboxed=True), or for `rlaif eval --exec` "
                "the environment variable RLAIF_EXEC_ALLOW_UNSANDBOXED=1")
        self.drop_privileges = is_root()
        self.temp_root = Path(temp_root) if temp_root else Path(tempfile.gettempdir())
        if self.isolation != "bwrap" and self.drop_privileges:
            self._check_reachable_unprivileged()
        if mode == "real":
            self.hf_cache = Path(hf_cache) if hf_cache else _default_hf_cache()
        else:
            self.hf_cache = None
        self.support = Path(tempfile.mkdtemp(prefix="rlaif-sbx-support-", dir=self.temp_root))
        self._finalizer = weakref.finalize(self, _rmtree, self.support)
        self._fill_support(known_ids or {})

    def _check_reachable_unprivileged(self) -> None:
        # Without bwrap's private root, the unprivileged uid sees the real filesystem.
        unreachable = [p for p in [*self.interpreter.paths(), self.temp_root] if not readable_by_others(p)]
        if unreachable and self.isolation == "none":
            self.drop_privileges = False  # opted in to no sandbox: run as we are
        elif unreachable:
            raise SandboxUnavailable(
                f"isolation '{self.isolation}' runs snippets as an unprivileged uid, which cannot read "
                f"{unreachable[0]}: install bubblewrap, or make the exec env and the temp folder "
                "world-readable")

    def _fill_support(self, known_ids: dict[str, Any]) -> None:
        os.chmod(self.support, 0o755)
        # Every module of the folder: bootstrap.py loads the others as one package.
        for source in sorted(HERMETIC_DIR.glob("*.py")):
            shutil.copyfile(source, self.support / source.name)
        (self.support / "known_ids.json").write_text(json.dumps(known_ids))
        for child in self.support.iterdir():
            os.chmod(child, 0o644)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- running --------------------------------------------------------------

    def run(self, code: str, *, timeout: float | None = None) -> RunResult:
        return self._execute({"task": "run", "code": code}, timeout)

    def probe_imports(self, modules: Iterable[str], names: Iterable[tuple[str, str]] = (), *,
                      timeout: float = 900.0) -> dict[str, Any]:
        """Ask the interpreter, inside the sandbox, which modules (and `from M import N` names) resolve.

        Modules are checked with importlib.util.find_spec (which imports parent packages);
        names by importing M and looking N up. Nothing is imported in this process.
        """
        payload = {"task": "probe", "modules": sorted(set(modules)), "names": sorted(set(names))}
        # One process imports every library the snippets name (torch and tensorflow
        # together): more address space and CPU time than one snippet gets.
        limits = replace(self.limits, timeout=timeout, cpu_seconds=int(timeout),
                         memory_mb=max(self.limits.memory_mb, 32768))
        result, answer = self._execute(payload, want_answer=True, limits=limits)
        if answer is None:
            raise RuntimeError(f"import probe failed in the sandbox: {result.short()}\n{result.stderr[-2000:]}")
        return answer

    def run_many(self, codes: Sequence[str], *, workers: int = 2,
                 progress: Callable[[int, RunResult], None] | None = None) -> list[RunResult]:
        results: list[RunResult | None] = [None] * len(codes)
        lock = threading.Lock()

        def one(index: int) -> None:
            result = self.run(codes[index])
            with lock:
                results[index] = result
                if progress is not None:
                    progress(index, result)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(one, range(len(codes))))
        return [r for r in results if r is not None]

    def _make_workdir(self, run_dir: Path) -> tuple[Path, int | None]:
        """RUN_DIR/work, owned by a fresh random uid when privileges are dropped (None otherwise)."""
        # Traversable but not listable: an unprivileged snippet reaches only its workdir.
        os.chmod(run_dir, 0o711)
        workdir = run_dir / "work"
        workdir.mkdir()
        uid = None
        if self.drop_privileges:
            uid = 1_000_000 + secrets.randbelow(1_000_000)
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        return workdir, uid

    def _command(self, workdir: Path) -> list[str]:
        command = [str(self.interpreter.python), "-I", "-B", str(self.support / "bootstrap.py")]
        if self.isolation == "bwrap":
            return bwrap_args(self.interpreter, self.support, self.hf_cache, workdir) + command
        if self.isolation == "unshare":
            return unshare_prefix() + command
        return command

    def _spawn_and_wait(self, command: list[str], job: dict[str, Any], workdir: Path, limits: Limits,
                        timeout: float, run_dir: Path) -> tuple[int, bool]:
        """Start the bootstrap with the job on stdin; (return code, timed out) once it is gone."""
        timed_out = False
        with (run_dir / "stdout").open("wb") as out, (run_dir / "stderr").open("wb") as err:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir,
                                    env=_environment(workdir, self.interpreter.prefix, self.hf_cache),
                                    start_new_session=True, preexec_fn=_preexec(limits), close_fds=True)
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(job).encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                self._kill(proc)
            finally:
                if proc.returncode is None:
                    self._kill(proc)
        return proc.returncode, timed_out

    def _execute(self, payload: dict[str, Any], timeout: float | None = None, want_answer: bool = False,
                 limits: Limits | None = None) -> Any:
        limits = limits or self.limits
        timeout = limits.timeout if timeout is None else timeout
        run_dir = Path(tempfile.mkdtemp(prefix="rlaif-sbx-", dir=self.temp_root))
        try:
            workdir, uid = self._make_workdir(run_dir)
            result_path = workdir / f".result-{secrets.token_hex(8)}.json"
            job = {**payload, "workdir": str(workdir), "result": str(result_path), "mode": self.mode,
                   "support": str(self.support), "uid": uid, "gid": uid,
                   "kill_leftovers_grace": 0.5 if self.isolation != "none" else 0.0}
            started = time.monotonic()
            returncode, timed_out = self._spawn_and_wait(self._command(workdir), job, workdir, limits, timeout,
                                                         run_dir)
            duration = time.monotonic() - started
            answer = _read_answer(result_path)
            result = interpret(returncode, answer, timed_out, duration,
                               tail(run_dir / "stdout", limits.tail_chars), tail(run_dir / "stderr", limits.tail_chars))
        finally:
            _rmtree(run_dir)
        if want_answer:
            return result, (answer or {}).get("probe")
        return result

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        # bwrap/unshare take their PID namespace down when they die (--die-with-parent,
        # --kill-child): killing our process group is enough.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


__all__ = ["Limits", "RunResult", "Sandbox", "SandboxUnavailable", "detect_isolation", "Interpreter", "Isolation",
           "Status", "HubMode"]
