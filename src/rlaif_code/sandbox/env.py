"""`rlaif exec-env`: the dedicated virtual environment that generated code runs in.

Generated code never runs in the tool's own environment: its imports would then
measure what rlaif-code happens to depend on, and a snippet could reach into it. The
exec env is built from a declared package list (`exec_packages.txt` beside this
module): the `[required]` set in one pip call, then the `[optional]` long tail one
package at a time with the required set pinned, so one stubborn package neither
fails the whole env nor drags torch to a CUDA build. What was installed, what failed
and what is known not to install here is written to `exec_env.json` in the env, and
the env's `stage.json` records the config that made it, so a second run is a no-op.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import (
    InputError,
    atomic_write_json,
    file_sha256,
    finished_result,
    read_json,
    write_stage_record,
)
from rlaif_code.core.config import check

PACKAGES_FILE = Path(__file__).with_name("exec_packages.txt")
ENV_REPORT = "exec_env.json"
SECTIONS = ("required", "optional", "unavailable")


@dataclass
class ExecEnvConfig:
    path: str | None = None  # None: $RLAIF_EXEC_ENV, else ~/.cache/rlaif-code/exec-env
    packages: str | None = None  # None: the list shipped with rlaif-code (sandbox/exec_packages.txt)
    python: str | None = None  # interpreter the venv is made from; None: the one running rlaif
    optional: bool = True  # also try the [optional] long tail, one package at a time
    pip_timeout: float = 1800.0  # seconds for one pip call

    def __post_init__(self) -> None:
        check(self.pip_timeout > 0, "pip_timeout", f"must be positive, got {self.pip_timeout!r}")

    def fingerprint_inputs(self) -> dict[str, str]:
        # An edited package list means installing again (pip keeps what is already there).
        return {"packages_sha256": file_sha256(Path(self.packages) if self.packages else PACKAGES_FILE)}


def default_env_path() -> Path:
    env = os.environ.get("RLAIF_EXEC_ENV")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlaif-code" / "exec-env"


def resolve_env_path(path: str | Path | None) -> Path:
    return (Path(path).expanduser() if path else default_env_path()).absolute()


def env_python(env_path: str | Path) -> Path:
    return Path(env_path) / "bin" / "python"


def find_exec_python(path: str | Path | None = None) -> Path:
    """The exec env's interpreter, or an InputError telling how to create it."""
    env_path = resolve_env_path(path)
    python = env_python(env_path)
    if not python.exists():
        raise InputError(f"no execution environment at {env_path}: create it with `rlaif exec-env"
                         f"{' --path ' + str(path) if path else ''}` (generated code never runs in "
                         "rlaif's own environment)")
    return python


@dataclass
class PackageList:
    required: list[str] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # name -> why


def read_packages(path: str | Path) -> PackageList:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"packages file not found: {path}")
    packages = PackageList()
    section: str | None = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line, _, comment = raw.partition("#")
        line = line.strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            if section not in SECTIONS:
                raise InputError(f"{path}:{lineno}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
            continue
        if section is None:
            raise InputError(f"{path}:{lineno}: '{line}' comes before any [required]/[optional] section")
        if len(line.split()) != 1:
            raise InputError(f"{path}:{lineno}: one requirement per line, got '{line}'")
        if section == "unavailable":
            packages.unavailable[line] = comment.strip()
        else:
            getattr(packages, section).append(line)
    if not packages.required:
        raise InputError(f"{path}: no [required] packages")
    return packages


def _pip(python: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "pip", "install", "--no-input", *args],
                          capture_output=True, text=True, timeout=timeout)


def _tail(text: str, lines: int = 6) -> str:
    """The end of pip's output, its ERROR lines first (its WARNINGs about the index say nothing)."""
    kept = [line for line in text.strip().splitlines() if not line.startswith("WARNING:")]
    errors = [line for line in kept if line.startswith("ERROR")]
    return "\n".join((errors or kept)[-lines:])


def run(cfg: ExecEnvConfig) -> dict[str, Any]:
    env_path = resolve_env_path(cfg.path)
    packages_file = Path(cfg.packages) if cfg.packages else PACKAGES_FILE
    packages = read_packages(packages_file)
    packages_sha = file_sha256(packages_file)
    if (done := finished_result(env_path, "exec-env", cfg)) is not None and env_python(env_path).exists():
        report = read_json(env_path / ENV_REPORT)
        print(f"exec env already built at {env_path}")
        return {**done, "path": str(env_path), "installed": len(report.get("installed", []))}
    started = time.monotonic()
    base_python = cfg.python or sys.executable
    if not env_python(env_path).exists():
        print(f"creating venv {env_path} from {base_python}", flush=True)
        made = subprocess.run([base_python, "-m", "venv", str(env_path)], capture_output=True, text=True)
        if made.returncode != 0:
            raise InputError(f"cannot create a venv at {env_path} with {base_python}: {_tail(made.stderr)}")
    python = env_python(env_path)
    print(f"installing {len(packages.required)} required packages (several minutes the first time)", flush=True)
    done = _pip(python, packages.required, cfg.pip_timeout)
    if done.returncode != 0:
        raise InputError(f"{packages_file}: installing the [required] packages into {env_path} failed:\n"
                         f"{_tail(done.stdout + done.stderr, 15)}")
    frozen = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    failed: dict[str, str] = {}
    installed = list(packages.required)
    if cfg.optional and packages.optional:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
            # Editable/URL lines cannot be constraints; everything else pins the required set.
            pins.write("".join(line + "\n" for line in frozen.splitlines() if "==" in line))
        try:
            for requirement in packages.optional:
                print(f"  optional: {requirement}", flush=True)
                try:
                    result = _pip(python, ["-c", pins.name, requirement], cfg.pip_timeout)
                except subprocess.TimeoutExpired:
                    failed[requirement] = f"pip took longer than {cfg.pip_timeout:.0f}s"
                    continue
                if result.returncode == 0:
                    installed.append(requirement)
                elif result.returncode < 0:
                    failed[requirement] = f"pip was killed by signal {-result.returncode}"
                else:
                    failed[requirement] = _tail(result.stdout + result.stderr, 4)
        finally:
            os.unlink(pins.name)
    versions = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True,
                              check=True).stdout.splitlines()
    report = {
        "python": subprocess.run([str(python), "-c", "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True).stdout.strip(),
        "installed": installed,
        "failed": failed,
        "unavailable": packages.unavailable,
        "freeze": versions,
        "packages_file": str(packages_file),
        "packages_sha256": packages_sha,
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_json(env_path / ENV_REPORT, report)
    metrics = {"path": str(env_path), "installed": len(installed), "failed": sorted(failed),
               "unavailable": sorted(packages.unavailable), "seconds": report["seconds"]}
    write_stage_record(env_path, "exec-env", cfg, metrics=metrics, outputs=[ENV_REPORT])
    print(json.dumps(metrics, indent=2))
    return metrics
