"""Runs inside the sandbox as `python -I -B bootstrap.py`, the job as JSON on stdin.

`-I` ignores PYTHONPATH, so hooks cannot be injected through the environment: this
script installs them (hermetic mode), drops privileges, then runs the snippet as
`__main__` and writes the outcome to the result file the job names. Standard library
only: it must work in any interpreter the exec env has.
"""

import ast
import atexit
import builtins
import importlib.util
import json
import os
import sys
import time
import traceback
import types

_HOOKS_PACKAGE = "_rlaif_hermetic"


def _write_result(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _other_processes():
    """PIDs in this PID namespace besides us, our ancestors and zombies."""
    keep = set()
    pid = os.getpid()
    while pid > 0:  # walk up to the namespace's init
        keep.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    others = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in keep:
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            others.append(int(name))
    return others


def _drop_privileges(uid, gid, keep_read_all):
    """Become an unprivileged uid (so RLIMIT_NPROC binds); in real mode keep only the
    capability to read files (CAP_DAC_READ_SEARCH), since the user's model cache may hold
    files only its owner can read. Writing anywhere but the workdir stays impossible."""
    libc = None
    if keep_read_all:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(8, 1, 0, 0, 0)  # PR_SET_KEEPCAPS: keep permitted caps across setuid
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if libc is not None:
        import ctypes

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        read_search = 1 << 2  # CAP_DAC_READ_SEARCH
        header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        data = (Data * 2)(Data(read_search, read_search, 0), Data(0, 0, 0))
        if libc.capset(ctypes.byref(header), data) != 0:
            print("rlaif sandbox: could not keep CAP_DAC_READ_SEARCH; cache files only root can read "
                  "will fail to open", file=sys.stderr)
        libc.prctl(8, 0, 0, 0, 0)


def _load_hooks(support):
    """The hermetic hooks: the support folder's modules as the package `_rlaif_hermetic`.

    Loaded by location because `-I` keeps the support folder off sys.path (so a snippet
    cannot import them by accident); as a package so hooks.py finds its sibling modules."""
    spec = importlib.util.spec_from_file_location(_HOOKS_PACKAGE, os.path.join(support, "__init__.py"),
                                                  submodule_search_locations=[support])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{_HOOKS_PACKAGE}.hooks")


def _describe(exc):
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        message = str(exc)[:2000]
    except Exception:
        message = "<unprintable>"
    out = {"status": "exception", "exception_type": name, "exception_message": message}
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        out["missing_module"] = exc.name.split(".")[0]
    return out


def _probe(job):
    """Which modules (find_spec) and `from M import N` names resolve here."""
    modules, names = {}, {}
    for module in job["modules"]:
        try:
            modules[module] = importlib.util.find_spec(module) is not None
        except Exception:  # a parent package that fails to import
            modules[module] = False
    for module, name in job["names"]:
        key = f"{module}:{name}"
        if not modules.get(module, False):
            names[key] = False
            continue
        try:
            imported = importlib.import_module(module)
            found = hasattr(imported, name)
            if not found:
                found = importlib.util.find_spec(f"{module}.{name}") is not None
        except Exception:
            found = False
        names[key] = found
    return {"modules": modules, "names": names}


def _prepare(job):
    """Load the hermetic hooks (hermetic mode), drop privileges, then install the hooks.

    Returns the hooks module, or None outside hermetic mode."""
    hooks = _load_hooks(job["support"]) if job["mode"] == "hermetic" else None
    if job.get("uid") is not None:
        _drop_privileges(job["uid"], job["gid"], keep_read_all=job["mode"] == "real")
    if hooks is not None:
        with open(os.path.join(job["support"], "known_ids.json"), encoding="utf-8") as handle:
            known = json.load(handle)
        hooks.install(job["mode"], known, job["workdir"])
    return hooks


def _run_snippet(job, hooks=None):
    """Run the job's code as `__main__` from snippet.py in the workdir; (outcome, exit code).

    With the hermetic hooks, the snippet's placeholder inputs are bound first (placeholders.py)."""
    sys.path.insert(0, job["workdir"])
    snippet_path = os.path.join(job["workdir"], "snippet.py")
    with open(snippet_path, "w", encoding="utf-8") as handle:
        handle.write(job["code"])
    sys.argv = [snippet_path]
    main_module = types.ModuleType("__main__")
    main_module.__file__ = snippet_path
    main_module.__builtins__ = builtins
    sys.modules["__main__"] = main_module
    try:
        tree = ast.parse(job["code"], snippet_path)  # parsed once: compiled, and read for placeholders
        code = compile(tree, snippet_path, "exec")
        if hooks is not None:
            hooks.bind_placeholders(tree, main_module.__dict__)
        del job["code"], tree
        exec(code, main_module.__dict__)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return ({"status": "exception", "exception_type": "SystemExit", "exception_message": str(exc.code)},
                    exc.code if isinstance(exc.code, int) else 1)
    except BaseException as exc:  # the snippet's failure is the measurement
        traceback.print_exc()
        return _describe(exc), 1
    return {"status": "ok"}, 0


def _wind_down():
    """What interpreter exit would do: atexit handlers, then flushing the streams."""
    # atexit handlers (multiprocessing's among them) may still stop the snippet's
    # children; what is alive after them is a leak.
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _count_leaks(outcome, grace):
    """Give the snippet's leftover processes `grace` seconds to end; mark the outcome if any remain."""
    leftovers = _other_processes() if grace else []
    deadline = time.monotonic() + grace
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.05)
        leftovers = _other_processes()
    if leftovers:
        outcome["leaked_processes"] = len(leftovers)
        if outcome["status"] == "ok":
            outcome["status"] = "leaked"


def main():
    job = json.loads(sys.stdin.read())
    sys.stdin.close()
    sys.stdin = open(os.devnull)
    os.dup2(sys.stdin.fileno(), 0)
    hooks = _prepare(job)
    if job["task"] == "probe":
        _write_result(job["result"], {"status": "ok", "probe": _probe(job)})
        sys.stdout.flush()
        os._exit(0)
    main_pid = os.getpid()
    outcome, exit_code = _run_snippet(job, hooks)
    if os.getpid() != main_pid:
        # A child the snippet forked ran off the end of the snippet: only the main
        # process reports the outcome.
        os._exit(exit_code)
    _wind_down()
    _count_leaks(outcome, float(job.get("kill_leftovers_grace", 0.0)))
    if hooks is not None:
        outcome["hub_calls"] = hooks.CALLS[:50]
        outcome["stand_ins"] = hooks.STAND_INS[:50]
    _write_result(job["result"], outcome)
    os._exit(exit_code)


if __name__ == "__main__":
    main()
