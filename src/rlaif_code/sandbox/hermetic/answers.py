"""What a patched model loader answers with, and the verdicts that decide it.

* `StandIn`: what a known model id loads to;
* the errors the real libraries raise for a repository that does not exist;
* the verdict on an id ("known", "unknown", "local") against the API database that
  `configure()` loads, recorded in `CALLS` for the run's report;
* `STAND_INS`: the inputs the run was given in place of missing ones (files, URLs,
  datasets, model files; see inputs.py and network.py), for the run's report.

Standard library only: this runs inside the sandboxed interpreter.
"""

import dis
import os
import sys

# One sandboxed process runs one snippet: module state is that run's state.
CALLS = []  # (entry point, id, "known"/"unknown"/"local") for the run's report
KNOWN = {"hf": set(), "th": {}, "tf": set()}
_WORKDIR = "."
STANDIN_PATHS = set()  # files and folders stand-in downloads made: loading them loads a stand-in
STAND_INS = []  # [what, target, kind]: "file"/"url"/"url body"/"dataset"/"column", the path/URL/id, what it held

HF_NOT_FOUND = ("{0} is not a local folder and is not a valid model identifier listed on "
                "'https://huggingface.co/models'\nIf this is a private repository, make sure to pass a token "
                "having permission to this repo either by logging in with `hf auth login` or by passing "
                "`token=<your_token>`")


def configure(known, workdir):
    """Load the known ids (lower-cased, tf handles without query or trailing slash) for this run."""
    global _WORKDIR
    _WORKDIR = os.path.realpath(workdir)
    KNOWN["hf"] = {i.lower() for i in known.get("hf", [])}
    KNOWN["th"] = {repo.lower(): {m.lower() for m in models} for repo, models in known.get("th", {}).items()}
    KNOWN["tf"] = {u.split("?")[0].rstrip("/").lower() for u in known.get("tf", [])}


_UNPACK_SEQUENCE = dis.opmap.get("UNPACK_SEQUENCE")
_UNPACK_EX = dis.opmap.get("UNPACK_EX")
_EXTENDED_ARG = dis.opmap.get("EXTENDED_ARG")


def _unpack_count(frame):
    try:
        code = frame.f_code.co_code
        op, arg = code[frame.f_lasti], code[frame.f_lasti + 1]
        if frame.f_lasti >= 2 and code[frame.f_lasti - 2] == _EXTENDED_ARG:
            arg |= code[frame.f_lasti - 1] << 8
    except (AttributeError, IndexError):
        return 1
    if op == _UNPACK_SEQUENCE:
        return max(1, arg)
    if op == _UNPACK_EX:  # a, *rest, b = ...: before and after the star
        return (arg & 0xFF) + (arg >> 8)
    return 1


class StandIn:
    """What a known model id loads to: absorbs any use without doing anything."""

    __slots__ = ("_label",)

    def __init__(self, label="model"):
        object.__setattr__(self, "_label", label)

    def __repr__(self):
        return f"<stand-in {self._label}>"

    __str__ = __repr__

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self

    def __setattr__(self, name, value):
        pass

    def __delattr__(self, name):
        pass

    def __call__(self, *args, **kwargs):
        return self

    def __getitem__(self, key):
        return self

    def __setitem__(self, key, value):
        pass

    def __delitem__(self, key):
        pass

    def __iter__(self):
        # `a, b, c = stand_in` must get three values: read the unpack count off the
        # caller's bytecode; anything else (a for loop) sees a batch of one.
        return iter((self,) * _unpack_count(sys._getframe(1)))

    def __len__(self):
        return 1

    def __contains__(self, item):
        return True

    def __bool__(self):
        return True

    def __index__(self):
        return 0

    def __int__(self):
        return 0

    def __float__(self):
        return 0.0

    def __complex__(self):
        return 0j

    def __round__(self, ndigits=None):
        return 0 if ndigits is None else 0.0

    def __format__(self, spec):
        for value in (0.0, 0, repr(self)):
            try:
                return format(value, spec)
            except (ValueError, TypeError):
                continue
        return repr(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return other is self

    def __ne__(self, other):
        return other is not self

    def __lt__(self, other):
        return False

    __le__ = __gt__ = __ge__ = __lt__

    def _same(self, *args):
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _same
    __pow__ = __rpow__ = __matmul__ = __rmatmul__ = __and__ = __rand__ = __or__ = __ror__ = _same
    __xor__ = __rxor__ = __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _same
    __neg__ = __pos__ = __abs__ = __invert__ = _same

    def keys(self):  # `model(**inputs)` with stand-in inputs
        return []

    def __array__(self, dtype=None, copy=None):
        import numpy

        return numpy.zeros((1, 1), dtype=dtype or "float32")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return cls(f"result of {getattr(func, '__name__', 'torch op')}")


def record(entry, repo, verdict):
    if len(CALLS) < 200:
        CALLS.append([entry, repo if isinstance(repo, str) else type(repo).__name__, verdict])


def record_stand_in(what, target, kind):
    if len(STAND_INS) < 200:
        STAND_INS.append([what, str(target)[:300], kind])


def workdir():
    return _WORKDIR


def as_id(value):
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return value.strip() if isinstance(value, str) else None


def is_local(value):
    repo = as_id(value)
    return bool(repo) and os.path.exists(repo) and repo not in STANDIN_PATHS


def hf_verdict(entry, value):
    """'local', 'known' or 'unknown' for a Hugging Face id (anything not a string is taken as known)."""
    repo = as_id(value)
    if repo is None:
        verdict = "known"  # a stand-in or config object: nothing to look up
    elif is_local(repo):
        verdict = "local"
    else:
        verdict = "known" if repo.lower() in KNOWN["hf"] else "unknown"
    record(entry, value, verdict)
    return verdict


def _make_error(cls, message):
    for build in (lambda: cls(message), lambda: cls(message, response=None)):
        try:
            return build()
        except Exception:
            continue
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


def repo_not_found(repo):
    try:
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError:
        try:
            from huggingface_hub.utils import RepositoryNotFoundError
        except ImportError:
            return OSError(HF_NOT_FOUND.format(repo))
    message = (f"404 Client Error. Repository Not Found for url: https://huggingface.co/api/models/{repo}.\n"
               "Please make sure you specified the correct `repo_id` and `repo_type`.")
    return _make_error(RepositoryNotFoundError, message)


def first_arg(args, kwargs, names):
    for name in names:
        if name in kwargs:
            return kwargs[name]
    return args[0] if args else None


ID_ARGS = ("pretrained_model_name_or_path", "pretrained_model_name", "model_name_or_path", "model_id",
           "repo_id")


def standin_file(repo, filename):
    safe = repo.replace("/", "__")
    folder = os.path.join(_WORKDIR, ".hermetic", safe)
    os.makedirs(folder, exist_ok=True)
    if not filename:
        STANDIN_PATHS.add(folder)
        return folder
    path = os.path.join(folder, filename.replace("/", "__"))
    open(path, "a").close()
    STANDIN_PATHS.add(path)
    return path


def tf_verdict(handle):
    value = as_id(handle)
    if value is None:
        return "known"
    if is_local(value):
        return "local"
    normal = value.split("?")[0].rstrip("/").lower()
    return "known" if normal in KNOWN["tf"] else "unknown"

