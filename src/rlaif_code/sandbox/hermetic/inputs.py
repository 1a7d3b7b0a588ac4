"""Stand-in input files: a missing file the snippet reads gets made first, with content of its type.

APIBench's reference snippets read inputs the sandbox does not have ('cat.jpg',
'audio.wav', 'data.csv', 'config.json', 'model.joblib'). In hermetic mode a *read* of a
path that does not exist is answered with a small, valid, deterministic file of the kind
the reader expects (content.py), made first and then read by the real library:

* `open()` / `io.open()` (and so pathlib, pandas, numpy, json, PIL's own opening) for a
  read-only mode: by the path's extension (image, audio, text, csv/tsv, json/jsonl,
  yaml, npy, pdf, html, xml; model files: an empty file that the model loaders below
  answer with a stand-in model). A path without a known extension is left alone;
* readers that say what they read, whatever the name: `PIL.Image.open` (image),
  `soundfile.SoundFile` and so `soundfile.read`/`info` and librosa (audio),
  `torchaudio.load`/`info` (audio), `cv2.imread` (image), `torchvision.io.read_image` /
  `decode_image` / `read_file` (image), diffusers' and transformers' `load_image` (image);
* `joblib.load` / `torch.load` of a missing model file (by extension) and `pickle.load`
  of a stand-in file: a `StandIn` model (patches.patch_loaders_of_files);
* `pandas.read_csv` / `read_table` of a stand-in file: a table that has any column the code
  asks for by name (`data[['age', 'fare']]` adds the missing ones, numbered rows, as floats);
* `datasets.load_dataset` of a Hub dataset id (not a local path, not a packaged builder
  such as 'csv' with data files): a `StandIn` dataset.

A relative path inside the working directory is made in place (its folders too); any
other (absolute, outside) is made under `.hermetic/inputs/` and the reader reads that.
Paths under the interpreter, its site-packages, the system folders and the caches are never
stood in for: libraries probe optional files there (dist-info metadata, config files).
Each stand-in is recorded in `answers.STAND_INS`. Writes, existing files, file
descriptors and URLs given to open() are untouched. Bytes that are exactly a stand-in
of another kind (an HTML page a URL stood in with) handed to an image or audio reader
are swapped for an image or a tone: the URL could not say what it held.

Standard library only: this runs inside the sandboxed interpreter.
"""

import builtins
import hashlib
import io
import os
import sys

from . import content
from .answers import STANDIN_PATHS, StandIn, as_id, record_stand_in, workdir

_ORIGINAL_OPEN = builtins.open
_MADE = {}  # a path the snippet named -> the stand-in file made for it
_URL_PREFIXES = ("http://", "https://", "ftp://", "s3://", "gs://", "hf://", "data:", "file:")


def _as_path(target):
    if isinstance(target, os.PathLike):
        try:
            target = os.fspath(target)
        except Exception:
            return None
    if isinstance(target, bytes):
        try:
            target = os.fsdecode(target)
        except Exception:
            return None
    if not isinstance(target, str) or not target.strip() or "\x00" in target or len(target) > 1024:
        return None
    return target


_SYSTEM = ("/usr", "/etc", "/proc", "/sys", "/dev", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_NOT_OURS = []  # folders whose missing files libraries probe (the interpreter, site-packages, caches)


def configure_roots():
    """The folders a stand-in is never made in: libraries look for optional files there (dist-info
    metadata, zipped stdlib, config files in their caches), and a stand-in would answer them."""
    roots = {*_SYSTEM, os.path.dirname(os.path.abspath(__file__))}
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path):
        if prefix and os.path.isabs(prefix):
            roots.update({os.path.abspath(prefix), os.path.realpath(prefix)})
    roots.update(os.path.join(workdir(), name) for name in (".cache", ".hermetic", ".config", ".local"))
    roots.discard(workdir())
    roots.discard("/")
    _NOT_OURS[:] = sorted(roots)


def _ours_to_make(path):
    absolute = os.path.abspath(path)
    return not any(absolute == root or absolute.startswith(root.rstrip(os.sep) + os.sep) for root in _NOT_OURS)


def _inside_workdir(path):
    root = workdir()
    try:
        return os.path.commonpath([root, os.path.realpath(path)]) == root
    except ValueError:
        return False


def _place(path):
    """Where the stand-in for `path` goes: in place when that is inside the workdir, else a file of ours."""
    if _inside_workdir(path):
        try:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            return path
        except OSError:
            pass
    folder = os.path.join(workdir(), ".hermetic", "inputs")
    os.makedirs(folder, exist_ok=True)
    digest = hashlib.sha1(os.path.abspath(path).encode("utf-8", "replace")).hexdigest()[:10]
    name = os.path.basename(path.rstrip("/")) or "input"
    return os.path.join(folder, f"{digest}-{name}"[:200])


def stand_in_path(target, kind=None):
    """The path to read instead of missing `target`, after making a stand-in there; None to leave it be.

    `kind` forces what the file holds (a reader that reads only images); else the extension decides."""
    path = _as_path(target)
    if path is None or path.startswith(_URL_PREFIXES):
        return None
    if path in _MADE:
        return _MADE[path]
    if os.path.exists(path) or not _ours_to_make(path):
        return None
    ext = content.extension(path)
    kind = kind or content.kind_of_extension(ext)
    if kind is None:
        return None
    try:
        data, _mime = content.make(kind, ext)
        made = _place(path)
        with _ORIGINAL_OPEN(made, "wb") as handle:
            handle.write(data)
    except OSError:
        return None
    _MADE[path] = made
    if kind == "model":
        STANDIN_PATHS.update({path, made})
    record_stand_in("file", path, kind)
    return made


def is_stand_in_file(target):
    """Whether `target` (a path or an open file) is a model file stood in for (loaders answer a StandIn)."""
    path = _as_path(target)
    if path is None:
        path = _as_path(getattr(target, "name", None))
    return path is not None and path in STANDIN_PATHS


def model_stand_in(entry, target):
    """A StandIn for `entry` (joblib.load, torch.load, pickle.load) reading a missing or stood-in model file."""
    path = _as_path(target)
    if path is not None and not os.path.exists(path) and content.kind_of_extension(content.extension(path)) == "model":
        stand_in_path(path, "model")
    if is_stand_in_file(target):
        name = _as_path(target) or _as_path(getattr(target, "name", None)) or ""
        return StandIn(f"{entry}({os.path.basename(name)!r})")
    return None


# -- swapping a stand-in of the wrong kind -----------------------------------------------------

def _served_other_kind(fp, kind):
    """Bytes to read instead, when `fp` holds exactly a stand-in body of another kind than `kind`."""
    getvalue = getattr(fp, "getvalue", None)
    if not callable(getvalue):
        return None
    try:
        data = getvalue()
    except Exception:
        return None
    if not isinstance(data, bytes) or content.sniff(data) == kind or data not in content.served():
        return None
    record_stand_in("url body", getattr(fp, "stand_in_url", "") or "a fetched stand-in", kind)
    return content.make(kind, "png" if kind == "image" else "wav")[0]


# -- the patches --------------------------------------------------------------------------

def _reading(mode):
    return isinstance(mode, str) and not any(c in mode for c in "wax+")


def install_open():
    """builtins.open and io.open: a missing file read in a read-only mode gets a stand-in by its extension."""
    configure_roots()
    if getattr(builtins.open, "_rlaif_patched", False):
        return

    def open(file, mode="r", *args, **kwargs):  # noqa: A001 (the builtin's own name, for tracebacks)
        try:
            return _ORIGINAL_OPEN(file, mode, *args, **kwargs)
        except FileNotFoundError:
            if isinstance(file, int) or not _reading(mode):
                raise
            made = stand_in_path(file)
            if made is None:
                raise
        return _ORIGINAL_OPEN(made, mode, *args, **kwargs)

    open._rlaif_patched = True
    open.__doc__ = _ORIGINAL_OPEN.__doc__
    builtins.open = open
    io.open = open


def _path_first(function, kind, path_kwargs=("fp", "file", "filename", "path", "uri", "input")):
    """`function` with its first argument (or a path keyword) replaced by a stand-in when it is missing."""
    if getattr(function, "_rlaif_patched", False):
        return function

    def reader(*args, **kwargs):
        if args:
            made = stand_in_path(args[0], kind)
            if made is not None:
                args = (made, *args[1:])
            else:
                swapped = _served_other_kind(args[0], kind)
                if swapped is not None:
                    args = (io.BytesIO(swapped), *args[1:])
        else:
            for name in path_kwargs:
                if name in kwargs:
                    made = stand_in_path(kwargs[name], kind)
                    if made is not None:
                        kwargs[name] = made
                    break
        return function(*args, **kwargs)

    reader._rlaif_patched = True
    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
        try:
            setattr(reader, attribute, getattr(function, attribute))
        except (AttributeError, TypeError):
            pass
    reader.__wrapped__ = function
    return reader


def patch_readers(module, names, kind):
    for name in names:
        function = getattr(module, name, None)
        if callable(function) and not isinstance(function, type):
            setattr(module, name, _path_first(function, kind))


def patch_soundfile(module):
    cls = getattr(module, "SoundFile", None)
    if not isinstance(cls, type) or cls.__dict__.get("_rlaif_patched"):
        return
    original = cls.__init__

    def __init__(self, file, mode="r", *args, **kwargs):
        if _reading(mode if isinstance(mode, str) else "r"):
            made = stand_in_path(file, "audio")
            if made is not None:
                file = made
            else:
                swapped = _served_other_kind(file, "audio")
                if swapped is not None:
                    file = io.BytesIO(swapped)
        original(self, file, mode, *args, **kwargs)

    cls.__init__ = __init__
    cls._rlaif_patched = True


def patch_load_image(module):
    """diffusers' and transformers' load_image check os.path.isfile first: make the stand-in before."""
    function = getattr(module, "load_image", None)
    if callable(function):
        module.load_image = _path_first(function, "image", ("image",))


def _open_columns(frame, path):
    """A table read from a stand-in file: asking it for a column it lacks adds that column first
    (0, 1, 2, ... as floats), so code that selects the columns it knows by name runs on it."""
    import pandas

    class StandInTable(pandas.DataFrame):
        @property
        def _constructor(self):
            return pandas.DataFrame  # what is computed from it is a plain table

        def __getitem__(self, key):
            wanted = key if isinstance(key, (list, tuple)) else [key]
            for column in wanted:
                if isinstance(column, str) and column not in self.columns:
                    record_stand_in("column", f"{path}:{column}", "float")
                    self[column] = [float(i) for i in range(len(self))]
            return super().__getitem__(key)

    return StandInTable(frame)


def patch_pandas(module):
    """pandas.read_csv / read_table: the stand-in table (by extension, as open() would) answers any column."""
    for name in ("read_csv", "read_table"):
        original = getattr(module, name, None)
        if original is None or getattr(original, "_rlaif_patched", False):
            continue

        def read(filepath_or_buffer, *args, _original=original, **kwargs):
            path = _as_path(filepath_or_buffer)
            made = stand_in_path(path) if path is not None else None
            if made is None and path is not None:
                made = _MADE.get(path)
            frame = _original(made or filepath_or_buffer, *args, **kwargs)
            if made is not None and isinstance(frame, module.DataFrame):
                return _open_columns(frame, path)
            return frame

        read._rlaif_patched = True
        read.__name__ = read.__qualname__ = name
        read.__doc__ = original.__doc__
        setattr(module, name, read)


def patch_cv2(module):
    patch_readers(module, ("imread", "imreadmulti"), "image")


# Builders datasets ships: `load_dataset('csv', data_files=...)` and the like read local files.
_PACKAGED_BUILDERS = {"csv", "json", "text", "parquet", "arrow", "pandas", "imagefolder", "audiofolder",
                      "videofolder", "webdataset", "sql", "xml", "generator", "spark", "pdffolder", "hdf5",
                      "niftifolder", "cache", "eval", "folder_based_builder"}


def patch_datasets(module):
    original = getattr(module, "load_dataset", None)
    if original is None or getattr(original, "_rlaif_patched", False):
        return

    def load_dataset(path=None, *args, **kwargs):
        repo = as_id(path)
        if (repo is None or os.path.exists(repo) or repo.lower() in _PACKAGED_BUILDERS
                or kwargs.get("data_files") or kwargs.get("data_dir")):
            return original(path, *args, **kwargs)
        record_stand_in("dataset", repo, "dataset")
        split = kwargs.get("split") or (args[1] if len(args) > 1 else None)
        return StandIn(f"load_dataset({repo!r}" + (f", split={split!r})" if split else ")"))

    load_dataset._rlaif_patched = True
    module.load_dataset = load_dataset


def patch_pickle(module):
    original = getattr(module, "load", None)
    if original is None or getattr(original, "_rlaif_patched", False):
        return

    def load(file, *args, **kwargs):
        if is_stand_in_file(file):
            return model_stand_in("pickle.load", file)
        return original(file, *args, **kwargs)

    load._rlaif_patched = True
    module.load = load
