"""Which isolation this machine offers, and the bubblewrap command line for one run.

`detect_isolation()` picks the strongest mechanism that works here (bwrap, then
unshare, else none); `bwrap_args()` builds the private root a snippet runs in: only
/usr, /etc, the interpreter's folders and the support folder (read-only) and the
run's working directory (writable). See runner.py for what each mechanism guarantees.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

Isolation = Literal["bwrap", "unshare", "none"]


def _probe(args: list[str]) -> bool:
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def is_root() -> bool:
    return os.geteuid() == 0


def unshare_prefix() -> list[str]:
    base = ["unshare", "--net", "--pid", "--fork", "--kill-child"]
    return base if is_root() else [base[0], "--user", "--map-root-user", *base[1:]]


@lru_cache(maxsize=None)
def detect_isolation() -> Isolation:
    """The strongest isolation that works on this machine ('none' if nothing does)."""
    if shutil.which("bwrap"):
        args = ["bwrap", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-net",
                "--unshare-pid", "--die-with-parent", "--new-session"]
        if not is_root():
            args.append("--unshare-user")
        if _probe(args + ["true"]):
            return "bwrap"
    if shutil.which("unshare") and _probe(unshare_prefix() + ["true"]):
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


def readable_by_others(path: Path) -> bool:
    """Whether an unprivileged uid could reach `path` (o+x on every ancestor, o+r on it)."""
    path = path.resolve()
    for parent in [*reversed(path.parents), path]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def _bwrap_namespaces_and_system() -> list[str]:
    """New namespaces, the read-only system folders and fresh /proc, /dev, /tmp."""
    args = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if not is_root():
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
    return args


def bwrap_args(interpreter: Interpreter, support: Path, hf_cache: Path | None, workdir: Path) -> list[str]:
    """The bwrap prefix for one run: the interpreter, support folder and model cache read-only,
    `workdir` writable and the current directory."""
    args = _bwrap_namespaces_and_system()
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

    for path in [*interpreter.paths(), support]:
        bind("--ro-bind", path)
    if hf_cache is not None and hf_cache.exists():
        bind("--ro-bind", hf_cache)
    bind("--bind", workdir)
    args += ["--chdir", str(workdir)]
    return args
