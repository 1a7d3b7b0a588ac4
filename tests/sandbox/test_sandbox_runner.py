"""The sandbox runner: outcomes, limits, isolation, and hostile code that must stay contained.

Every hostile snippet must come back as a failure, leave no process behind (checked
with psutil) and no file outside its temporary directory (checked on a HOME-like
folder outside the sandbox). They need no packages, so they run in a minimal venv.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from rlaif_code.sandbox.runner import Limits, Sandbox, SandboxUnavailable, detect_isolation

HOSTILE_LIMITS = Limits(timeout=3.0, cpu_seconds=5, memory_mb=512, file_size_mb=8, processes=32, open_files=64)


@pytest.fixture
def sandbox_root(tmp_path: Path) -> Path:
    root = tmp_path / "sbx"
    root.mkdir()
    return root


def leftover_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def assert_clean(sandbox: Sandbox, root: Path) -> None:
    """No process of this sandbox alive and no per-run folder left under its temp root."""
    deadline = time.monotonic() + 2.0
    while leftover_processes(str(sandbox.support)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftover_processes(str(sandbox.support)) == []
    assert [p.name for p in root.iterdir() if p != sandbox.support] == []


# -- ordinary outcomes -----------------------------------------------------------


def test_ok_exception_and_missing_module(sandbox_python: Path, sandbox_root: Path) -> None:
    with Sandbox(sandbox_python, temp_root=sandbox_root, limits=Limits(timeout=30)) as sandbox:
        ok = sandbox.run("import sys\nprint('hello', sys.flags.isolated)\nprint('err', file=sys.stderr)")
        assert ok.status == "ok" and ok.exit_code == 0
        assert ok.stdout.strip() == "hello 1" and ok.stderr.strip() == "err"
        assert ok.duration > 0
        failed = sandbox.run("def f():\n    raise KeyError('nope')\nf()")
        assert failed.status == "exception" and failed.exception_type == "KeyError"
        assert "nope" in failed.exception_message and "Traceback" in failed.stderr
        missing = sandbox.run("import surely_not_installed_pkg.sub")
        assert missing.status == "exception" and missing.missing_module == "surely_not_installed_pkg"
        exit_code = sandbox.run("import sys; sys.exit(3)")
        assert exit_code.status == "exception" and exit_code.exception_type == "SystemExit"
        assert sandbox.run("import sys; sys.exit(0)").ok
        assert_clean(sandbox, sandbox_root)


def test_environment_is_scrubbed_and_workdir_private(sandbox_python: Path, sandbox_root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_SECRET_TOKEN", "do-not-leak")
    code = ("import os, sys, json\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), "
            "'path0': sys.path[0], 'tmp': os.listdir('/tmp')}))")
    with Sandbox(sandbox_python, temp_root=sandbox_root, limits=Limits(timeout=30)) as sandbox:
        result = sandbox.run(code)
    import json

    seen = json.loads(result.stdout)
    assert "RLAIF_SECRET_TOKEN" not in seen["env"] and seen["env"]["HF_HUB_OFFLINE"] == "1"
    assert seen["env"]["HOME"] == seen["cwd"] == seen["path0"]
    assert Path(seen["cwd"]).is_relative_to(sandbox_root)
    assert not Path(seen["cwd"]).exists()  # removed afterwards
    if detect_isolation() == "bwrap":
        # Only this run's folder and the support folder exist in the sandbox's /tmp.
        assert len(seen["tmp"]) <= 2


def test_parallel_workers_keep_order(minimal_python: Path, sandbox_root: Path) -> None:
    codes = [f"print({i} * {i})" for i in range(6)] + ["raise ValueError"]
    with Sandbox(minimal_python, temp_root=sandbox_root) as sandbox:
        results = sandbox.run_many(codes, workers=2)
        assert [r.stdout.strip() for r in results[:6]] == [str(i * i) for i in range(6)]
        assert results[6].exception_type == "ValueError"
        assert_clean(sandbox, sandbox_root)


@pytest.fixture
def public_dir():
    """Without bwrap, a root caller's snippets run as an unprivileged uid: venv and temp
    folder must be world-readable (pytest's own tmp folders are 0700)."""
    public = Path(tempfile.mkdtemp(prefix="rlaif-test-public-"))
    os.chmod(public, 0o755)
    (public / "sbx").mkdir(mode=0o755)
    os.chmod(public / "sbx", 0o755)
    yield public
    subprocess.run(["rm", "-rf", str(public)], check=True)


def test_refuses_to_run_unsandboxed_unless_opted_in(public_dir: Path, make_venv) -> None:
    python = make_venv(public_dir / "env")
    with pytest.raises(SandboxUnavailable, match="never run unsandboxed"):
        Sandbox(python, isolation="none", temp_root=public_dir / "sbx")
    with Sandbox(python, isolation="none", allow_unsandboxed=True, temp_root=public_dir / "sbx") as sandbox:
        assert sandbox.run("print(1)").ok
        assert_clean(sandbox, public_dir / "sbx")


def test_unshare_isolation_blocks_network(public_dir: Path, make_venv) -> None:
    if subprocess.run(["unshare", "--net", "--pid", "--fork", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare cannot make namespaces here")
    python = make_venv(public_dir / "env")
    root = public_dir / "sbx"
    try:
        Sandbox(python, isolation="unshare", temp_root=root).close()
    except SandboxUnavailable as err:
        pytest.skip(f"the unshare fallback cannot run here: {err}")
    with Sandbox(python, isolation="unshare", temp_root=root, limits=HOSTILE_LIMITS) as sandbox:
        result = sandbox.run("import socket\nprint([n for _, n in socket.if_nameindex()])\n"
                             "socket.create_connection(('127.0.0.1', 9), timeout=1)")
        assert result.status == "exception" and "lo" in result.stdout
        daemon = sandbox.run("import os, time\nif os.fork() == 0:\n    time.sleep(30)\ntime.sleep(0.1)")
        assert daemon.status == "leaked"
        assert_clean(sandbox, root)


# -- hostile code ------------------------------------------------------------------


@pytest.fixture
def hostile(minimal_python: Path, sandbox_root: Path):
    with Sandbox(minimal_python, temp_root=sandbox_root, limits=HOSTILE_LIMITS) as sandbox:
        yield sandbox
        assert_clean(sandbox, sandbox_root)


@pytest.fixture
def victim_home(tmp_path: Path) -> Path:
    """A HOME-like folder outside the sandbox, with a secret in it."""
    home = tmp_path / "victim-home"
    home.mkdir()
    (home / "secret.txt").write_text("top secret")
    return home


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_hostile_writes_and_reads_outside_workdir(hostile: Sandbox, victim_home: Path) -> None:
    before = snapshot(victim_home)
    write = hostile.run(f"open({str(victim_home / 'pwned.txt')!r}, 'w').write('x')")
    read = hostile.run(f"print(open({str(victim_home / 'secret.txt')!r}).read())")
    home = hostile.run("import os\nos.makedirs(os.path.expanduser('~/../../escape'), exist_ok=True)\n"
                       f"open({str(Path.home() / 'rlaif-sandbox-escape.txt')!r}, 'w').write('x')")
    for result in (write, read, home):
        assert not result.ok and result.status == "exception"
        assert result.exception_type in ("FileNotFoundError", "PermissionError", "OSError")
    assert "top secret" not in read.stdout
    assert snapshot(victim_home) == before
    assert not (Path.home() / "rlaif-sandbox-escape.txt").exists()


def test_hostile_socket_to_loopback_listener(hostile: Sandbox) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        result = hostile.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"
                             ".sendall(b'escaped')")
        assert not result.ok and result.exception_type == "ConnectionRefusedError"
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing ever connected


def test_hostile_socket_to_outside_address(hostile: Sandbox) -> None:
    # The snippet refuses to try unless its namespace has no route at all, so no packet
    # can leave even if isolation were broken. 192.0.2.1 is TEST-NET-1 (documentation only).
    code = ("import socket\n"
            "routes = open('/proc/net/route').read().splitlines()[1:]\n"
            "assert not routes, routes\n"
            "assert [n for _, n in socket.if_nameindex()] == ['lo']\n"
            "socket.create_connection(('192.0.2.1', 80), timeout=1)")
    result = hostile.run(code)
    assert not result.ok and result.status == "exception"
    assert result.exception_type == "OSError" and "unreachable" in result.exception_message


def test_hostile_fork_bomb(hostile: Sandbox) -> None:
    started = time.monotonic()
    result = hostile.run("import os\nwhile True:\n    os.fork()")
    assert not result.ok
    assert result.status in ("exception", "timeout", "killed")
    if result.status == "exception":
        assert result.limit == "processes"
    assert time.monotonic() - started < HOSTILE_LIMITS.timeout + 5


def test_hostile_infinite_loop(hostile: Sandbox) -> None:
    result = hostile.run("while True:\n    pass")
    assert result.status == "timeout" and result.duration < HOSTILE_LIMITS.timeout + 2


def test_hostile_cpu_limit(minimal_python: Path, sandbox_root: Path) -> None:
    limits = Limits(timeout=10, cpu_seconds=1)
    with Sandbox(minimal_python, temp_root=sandbox_root, limits=limits) as sandbox:
        result = sandbox.run("while True:\n    pass")
        assert result.status == "killed" and result.limit == "cpu"
        assert_clean(sandbox, sandbox_root)


def test_hostile_memory_bomb(hostile: Sandbox) -> None:
    result = hostile.run("blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 2**20))")
    assert result.status == "exception" and result.exception_type == "MemoryError"
    assert result.limit == "memory"


def test_hostile_output_flood(hostile: Sandbox) -> None:
    result = hostile.run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    # Python ignores SIGXFSZ, so the write fails with EFBIG ("File too large") instead.
    assert not result.ok and result.status in ("exception", "killed", "timeout")
    if result.status != "timeout":
        assert result.limit == "file_size"
    assert len(result.stdout) <= HOSTILE_LIMITS.tail_chars


def test_hostile_kills_its_parent(hostile: Sandbox) -> None:
    me = os.getpid()
    result = hostile.run("import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\n"
                         f"os.kill({me}, signal.SIGKILL)\ntime.sleep(1)")
    assert not result.ok
    assert psutil.pid_exists(me)  # we are still here to check


def test_hostile_sleeps_past_timeout(hostile: Sandbox) -> None:
    result = hostile.run("import time\ntime.sleep(60)")
    assert result.status == "timeout"
    assert HOSTILE_LIMITS.timeout <= result.duration < HOSTILE_LIMITS.timeout + 2


def test_hostile_double_forked_daemon(hostile: Sandbox, victim_home: Path) -> None:
    target = victim_home / "daemon-was-here.txt"
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(1.0)\n"
            f"        open({str(target)!r}, 'w').write('escaped')\n"
            "        while True:\n"
            "            time.sleep(1)\n"
            "    os._exit(0)\n"
            "time.sleep(0.2)\n"
            "print('parent done')")
    result = hostile.run(code)
    assert result.status == "leaked" and result.leaked_processes >= 1 and not result.ok
    assert "parent done" in result.stdout
    time.sleep(1.5)  # past the moment the daemon meant to act
    assert not target.exists()
    assert leftover_processes(str(hostile.support)) == []
