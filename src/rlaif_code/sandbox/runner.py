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
import stat
import subprocess
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

HERMETIC_DIR = Path(__file__).with_name("hermetic")

Status = Literal["ok", "exception", "timeout", "killed", "leaked", "error"]
Isolation = Literal["bwrap", "unshare", "none"]
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


def _probe(args: list[str]) -> bool:
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _is_root() -> bool:
    return os.geteuid() == 0


def _unshare_prefix() -> list[str]:
    base = ["unshare", "--net", "--pid", "--fork", "--kill-child"]
    return base if _is_root() else [base[0], "--user", "--map-root-user", *base[1:]]


@lru_cache(maxsize=None)
def detect_isolation() -> Isolation:
    """The strongest isolation that works on this machine ('none' if nothing does)."""
    if shutil.which("bwrap"):
        args = ["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-net",
                "--unshare-pid", "--die-with-parent", "--new-session"]
        if not _is_root():
            args.append("--unshare-user")
        if _probe(args + ["true"]):
            return "bwrap"
    if shutil.which("unshare") and _probe(_unshare_prefix() + ["true"]):
        return "unshare"
    return "none"


@dataclass(frozen=True)
class Interpreter:
    """Where an interpreter lives: every path the sandbox must show it."""

    python: Path
    prefix: Path
    base_prefix: Path
    executable: Path  # realpath of the binary
    extra_paths: tuple[Path, ...] = ()  # sys.path entries outside both prefixes

    @classmethod
    def inspect(cls, python: str | Path) -> "Interpreter":
        python = Path(python).absolute()  # the sandbox starts elsewhere; keep the venv's symlink
        if not python.exists():
            raise FileNotFoundError(f"interpreter not found: {python}")
        # Runs the exec env's interpreter on a constant script of ours: no generated code.
        script = ("import json, os, sys; print(json.dumps([sys.prefix, sys.base_prefix, "
                  "os.path.realpath(sys.executable), sys.path]))")
        out = subprocess.run([str(python), "-I", "-c", script], capture_output=True, text=True, timeout=60,
                             check=True).stdout
        prefix, base_prefix, executable, path = json.loads(out)
        roots = [Path(prefix), Path(base_prefix)]
        extra = tuple(sorted({Path(p) for p in path if p and Path(p).exists()
                              and not any(Path(p).is_relative_to(r) for r in roots)
                              and not Path(p).is_relative_to("/usr")}))
        return cls(python, Path(prefix), Path(base_prefix), Path(executable), extra)

    def paths(self) -> list[Path]:
        return [self.prefix, self.base_prefix, self.executable.parent, *self.extra_paths]


def _readable_by_others(path: Path) -> bool:
    """Whether an unprivileged uid could reach `path` (o+x on every ancestor, o+r on it)."""
    path = path.resolve()
    for parent in [*reversed(path.parents), path]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


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


def _tail(path: Path, chars: int) -> str:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            handle.seek(max(0, size - chars * 4))
            data = handle.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")[-chars:]


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
        self.drop_privileges = _is_root()
        self.temp_root = Path(temp_root) if temp_root else Path(tempfile.gettempdir())
        if self.isolation != "bwrap" and self.drop_privileges:
            # Without bwrap's private root, the unprivileged uid sees the real filesystem.
            unreachable = [p for p in [*self.interpreter.paths(), self.temp_root] if not _readable_by_others(p)]
            if unreachable and self.isolation == "none":
                self.drop_privileges = False  # opted in to no sandbox: run as we are
            elif unreachable:
                raise SandboxUnavailable(
                    f"isolation '{self.isolation}' runs snippets as an unprivileged uid, which cannot read "
                    f"{unreachable[0]}: install bubblewrap, or make the exec env and the temp folder "
                    "world-readable")
        if mode == "real":
            self.hf_cache = Path(hf_cache) if hf_cache else _default_hf_cache()
        else:
            self.hf_cache = None
        self.support = Path(tempfile.mkdtemp(prefix="rlaif-sbx-support-", dir=self.temp_root))
        self._finalizer = weakref.finalize(self, _rmtree, self.support)
        os.chmod(self.support, 0o755)
        for name in ("bootstrap.py", "hooks.py"):
            shutil.copyfile(HERMETIC_DIR / name, self.support / name)
        (self.support / "known_ids.json").write_text(json.dumps(known_ids or {}))
        for child in self.support.iterdir():
            os.chmod(child, 0o644)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- building the command -------------------------------------------------

    def _bwrap_args(self, workdir: Path) -> list[str]:
        args = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
        if not _is_root():
            args.append("--unshare-user")
        args += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            top = Path("/") / name
            if top.is_symlink():
                args += ["--symlink", os.readlink(top), str(top)]
            elif top.is_dir():
                args += ["--ro-bind", str(top), str(top)]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm",
                 "--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
        made: set[Path] = {Path("/"), Path("/tmp"), Path("/dev"), Path("/proc")}
        bound: list[Path] = [Path("/usr"), Path("/etc")]

        def bind(kind: str, path: Path) -> None:
            if kind == "--ro-bind" and any(path.is_relative_to(b) for b in bound):
                return  # already visible through a bound ancestor
            # bwrap makes missing parents 0700, which the dropped uid could not cross.
            for parent in reversed(path.parents):
                if parent not in made and not any(parent.is_relative_to(b) for b in bound):
                    args.extend(["--perms", "0755", "--dir", str(parent)])
                    made.add(parent)
            args.extend([kind, str(path), str(path)])
            bound.append(path)

        for path in [*self.interpreter.paths(), self.support]:
            bind("--ro-bind", path)
        if self.hf_cache is not None and self.hf_cache.exists():
            bind("--ro-bind", self.hf_cache)
        bind("--bind", workdir)
        args += ["--chdir", str(workdir)]
        return args

    def _environment(self, workdir: Path) -> dict[str, str]:
        env = {
            "PATH": f"{self.interpreter.prefix / 'bin'}:/usr/local/bin:/usr/bin:/bin",
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
            "HF_HOME": str(self.hf_cache) if self.hf_cache else str(workdir / ".cache" / "huggingface"),
        }
        return env

    def _preexec(self, limits: Limits) -> Callable[[], None]:
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

    def _execute(self, payload: dict[str, Any], timeout: float | None = None, want_answer: bool = False,
                 limits: Limits | None = None) -> Any:
        limits = limits or self.limits
        timeout = limits.timeout if timeout is None else timeout
        run_dir = Path(tempfile.mkdtemp(prefix="rlaif-sbx-", dir=self.temp_root))
        # Traversable but not listable: an unprivileged snippet reaches only its workdir.
        os.chmod(run_dir, 0o711)
        workdir = run_dir / "work"
        workdir.mkdir()
        uid = gid = None
        if self.drop_privileges:
            uid = gid = 1_000_000 + secrets.randbelow(1_000_000)
            os.chown(workdir, uid, gid)
        os.chmod(workdir, 0o700)
        result_path = workdir / f".result-{secrets.token_hex(8)}.json"
        job = {**payload, "workdir": str(workdir), "result": str(result_path), "mode": self.mode,
               "support": str(self.support), "uid": uid, "gid": gid,
               "kill_leftovers_grace": 0.5 if self.isolation != "none" else 0.0}
        command = [str(self.interpreter.python), "-I", "-B", str(self.support / "bootstrap.py")]
        if self.isolation == "bwrap":
            command = self._bwrap_args(workdir) + command
        elif self.isolation == "unshare":
            command = _unshare_prefix() + command
        stdout_path, stderr_path = run_dir / "stdout", run_dir / "stderr"
        started = time.monotonic()
        timed_out = False
        try:
            with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir,
                                        env=self._environment(workdir), start_new_session=True,
                                        preexec_fn=self._preexec(limits), close_fds=True)
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
            duration = time.monotonic() - started
            answer = None
            if result_path.is_file():
                try:
                    answer = json.loads(result_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    answer = None
            result = self._result(proc.returncode, answer, timed_out, duration,
                                  _tail(stdout_path, limits.tail_chars), _tail(stderr_path, limits.tail_chars))
        finally:
            _rmtree(run_dir)
        if want_answer:
            return result, (answer or {}).get("probe")
        return result

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        if self.isolation == "none":
            return
        # bwrap/unshare take their PID namespace down when they die (--die-with-parent,
        # --kill-child); nothing else to reap from here.

    @staticmethod
    def _result(returncode: int, answer: dict[str, Any] | None, timed_out: bool, duration: float,
                stdout: str, stderr: str) -> RunResult:
        base = {"stdout": stdout, "stderr": stderr, "duration": round(duration, 3)}
        if timed_out:
            return RunResult("timeout", exit_code=None, signal=signal.SIGKILL, **base)
        if answer is not None and "status" in answer:
            status = answer["status"]
            exc_type, message = answer.get("exception_type"), answer.get("exception_message")
            return RunResult(status, exit_code=returncode, exception_type=exc_type, exception_message=message,
                             missing_module=answer.get("missing_module"),
                             limit=_limit_of_exception(exc_type, message),
                             leaked_processes=int(answer.get("leaked_processes", 0)), **base)
        sig = -returncode if returncode < 0 else (returncode - 128 if returncode > 128 else None)
        if sig is not None:
            return RunResult("killed", exit_code=returncode, signal=sig, limit=_KILLED_BY.get(sig), **base)
        return RunResult("error", exit_code=returncode, exception_type="SandboxError",
                         exception_message=(stderr.strip().splitlines() or ["the sandbox gave no result"])[-1],
                         **base)


def _default_hf_cache() -> Path:
    env = os.environ.get("HF_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "huggingface"


__all__ = ["Limits", "RunResult", "Sandbox", "SandboxUnavailable", "detect_isolation", "Interpreter"]
