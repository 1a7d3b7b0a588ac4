"""How each library's model-loading entry points are patched, one function per kind.

A patched loader asks `answers` for a verdict on the id it is given, then calls the
real loader (a local path), raises the library's own not-found error (an unknown id)
or returns a `StandIn` (a known id). Functions that only take a model (from_config,
torch's tensor factories) pass stand-ins through. Each patch is marked `_rlaif_patched`
so nothing is wrapped twice (a module executed again, a function two modules share).

Standard library only: this runs inside the sandboxed interpreter.
"""

import os
import urllib.error

from . import inputs
from .answers import (
    HF_NOT_FOUND,
    ID_ARGS,
    KNOWN,
    StandIn,
    as_id,
    first_arg,
    hf_verdict,
    is_local,
    record,
    repo_not_found,
    standin_file,
    tf_verdict,
)


def patch_from_pretrained(cls):
    original = cls.__dict__["from_pretrained"]
    if getattr(original, "_rlaif_patched", False):
        return

    def from_pretrained(klass, *args, **kwargs):
        repo = first_arg(args, kwargs, ID_ARGS)
        verdict = hf_verdict(f"{klass.__name__}.from_pretrained", repo)
        if verdict == "local":
            return original.__get__(None, klass)(*args, **kwargs)
        if verdict == "unknown":
            raise OSError(HF_NOT_FOUND.format(as_id(repo)))
        return StandIn(f"{klass.__name__}.from_pretrained({as_id(repo) or ''!r})")

    from_pretrained._rlaif_patched = True
    cls.from_pretrained = classmethod(from_pretrained)


def patch_from_config(cls):
    original = cls.__dict__["from_config"]
    if getattr(original, "_rlaif_patched", False) or not isinstance(original, classmethod):
        return

    def from_config(klass, *args, **kwargs):
        if any(isinstance(v, StandIn) for v in (*args, *kwargs.values())):
            return StandIn(f"{klass.__name__}.from_config")
        return original.__get__(None, klass)(*args, **kwargs)

    from_config._rlaif_patched = True
    cls.from_config = classmethod(from_config)


def patch_constructor(cls, entry):
    """Classes whose constructor takes the model id (SentenceTransformer, CrossEncoder)."""
    if cls.__dict__.get("_rlaif_patched"):
        return

    def __new__(klass, *args, **kwargs):
        repo = first_arg(args, kwargs, ("model_name_or_path", "model_name"))
        if repo is None:
            return object.__new__(klass)
        verdict = hf_verdict(entry, repo)
        if verdict == "local":
            return object.__new__(klass)
        if verdict == "unknown":
            raise OSError(HF_NOT_FOUND.format(as_id(repo)))
        return StandIn(f"{entry}({as_id(repo)!r})")

    cls.__new__ = __new__
    cls._rlaif_patched = True


def scan_classes(module):
    """Patch every class defined in `module` that defines its own from_pretrained / from_config."""
    for value in list(vars(module).values()):
        if not isinstance(value, type) or value.__module__ != module.__name__:
            continue
        if "from_pretrained" in value.__dict__ and isinstance(value.__dict__["from_pretrained"], classmethod):
            patch_from_pretrained(value)
        if "from_config" in value.__dict__:
            patch_from_config(value)


def patch_pipeline(module):
    original = getattr(module, "pipeline", None)
    if original is None or getattr(original, "_rlaif_patched", False):
        return

    def pipeline(task=None, model=None, *args, **kwargs):
        check_task = getattr(module, "check_task", None)
        if isinstance(task, str) and check_task is not None:
            check_task(task)  # a made-up task fails as it really would (KeyError)
        for value in (model, kwargs.get("tokenizer"), kwargs.get("feature_extractor"),
                      kwargs.get("image_processor")):
            if isinstance(value, (str, os.PathLike)):
                verdict = hf_verdict("pipeline", value)
                if verdict == "unknown":
                    raise OSError(HF_NOT_FOUND.format(as_id(value)))
                if verdict == "local":
                    return original(task, model, *args, **kwargs)
        if model is None:
            record("pipeline", task, "default model")
        return StandIn(f"pipeline({task!r})")

    pipeline._rlaif_patched = True
    module.pipeline = pipeline


def patch_hub_downloads(module):
    for name in ("hf_hub_download", "cached_download", "snapshot_download"):
        original = getattr(module, name, None)
        if original is None or getattr(original, "_rlaif_patched", False):
            continue

        def download(*args, _name=name, _original=original, **kwargs):
            repo = first_arg(args, kwargs, ("repo_id", "url_or_filename"))
            repo_id = as_id(repo) or ""
            if _name == "cached_download" and "huggingface.co/" in repo_id:
                repo_id = repo_id.split("huggingface.co/", 1)[1].split("/resolve/")[0]
            verdict = hf_verdict(_name, repo_id)
            if verdict == "local":
                return _original(*args, **kwargs)
            if verdict == "unknown":
                raise repo_not_found(repo_id)
            filename = kwargs.get("filename") or (args[1] if len(args) > 1 and _name == "hf_hub_download" else "")
            return standin_file(repo_id, filename if _name != "snapshot_download" else "")

        download._rlaif_patched = True
        setattr(module, name, download)


def patch_keras_mixin(module):
    original = getattr(module, "from_pretrained_keras", None)
    if original is None:
        return

    def from_pretrained_keras(*args, **kwargs):
        repo = first_arg(args, kwargs, ID_ARGS)
        verdict = hf_verdict("from_pretrained_keras", repo)
        if verdict == "local":
            return original(*args, **kwargs)
        if verdict == "unknown":
            raise repo_not_found(as_id(repo))
        return StandIn(f"from_pretrained_keras({as_id(repo)!r})")

    module.from_pretrained_keras = from_pretrained_keras


def patch_loaders_of_files(module, names):
    """joblib.load / torch.load of a file a hermetic download stood in for, or of a missing model file
    (by its extension: .joblib, .pkl, .pt, ...; made as a stand-in file and recorded): a stand-in model."""
    for name in names:
        original = getattr(module, name, None)
        if original is None or getattr(original, "_rlaif_patched", False):
            continue

        def load(target, *args, _original=original, **kwargs):
            stand_in = inputs.model_stand_in("load", target)
            if stand_in is not None:
                return stand_in
            return _original(target, *args, **kwargs)

        load._rlaif_patched = True
        setattr(module, name, load)


def patch_torch_hub(module):
    original = getattr(module, "load", None)
    if original is None or getattr(original, "_rlaif_patched", False):
        return

    def load(repo_or_dir=None, model=None, *args, **kwargs):
        if kwargs.get("source") == "local" or is_local(repo_or_dir):
            record("torch.hub.load", repo_or_dir, "local")
            return original(repo_or_dir, model, *args, **kwargs)
        repo = (as_id(repo_or_dir) or "").split(":")[0].lower()
        models = KNOWN["th"].get(repo)
        if models is None:
            record("torch.hub.load", repo_or_dir, "unknown")
            raise urllib.error.HTTPError(f"https://github.com/{repo}", 404, "Not Found", None, None)
        if isinstance(model, str) and model.lower() not in models:
            record("torch.hub.load", f"{repo}:{model}", "unknown")
            raise RuntimeError(f"Cannot find callable {model} in hubconf")
        record("torch.hub.load", f"{repo}:{model}", "known")
        return StandIn(f"torch.hub.load({repo!r}, {model!r})")

    load.__qualname__ = "load"  # errors read as the real function's ("load() got ...")
    load._rlaif_patched = True
    module.load = load


def _holds_stand_in(value, depth=0):
    if isinstance(value, StandIn):
        return True
    if depth < 2 and isinstance(value, (list, tuple)):
        return any(_holds_stand_in(v, depth + 1) for v in value[:64])
    return False


def patch_tensor_factories(module):
    """torch.tensor & co. do not dispatch on __torch_function__ for their data argument."""
    for name in ("tensor", "as_tensor", "from_numpy", "stack", "cat", "concat", "Tensor"):
        original = getattr(module, name, None)
        if original is None or isinstance(original, type) or getattr(original, "_rlaif_patched", False):
            continue

        def factory(*args, _original=original, _name=name, **kwargs):
            if args and _holds_stand_in(args[0]):
                return StandIn(f"torch.{_name} of a stand-in")
            return _original(*args, **kwargs)

        factory._rlaif_patched = True
        factory.__name__ = factory.__qualname__ = name
        setattr(module, name, factory)


def _keras_identity(kwargs):
    """A real Keras layer passing its input through: Keras models refuse any other object."""
    try:
        try:
            import tf_keras as keras
        except ImportError:
            from tensorflow import keras
        allowed = {k: v for k, v in kwargs.items()
                   if k in ("input_shape", "batch_input_shape", "trainable", "name", "dtype")}
        return keras.layers.Lambda(lambda x: x, **allowed)
    except Exception:
        return None


def patch_tensorflow_hub(module):
    def checked(entry, handle):
        verdict = tf_verdict(handle)
        record(entry, handle, verdict)
        if verdict == "unknown":
            raise urllib.error.HTTPError(str(handle), 404, "Not Found", None, None)
        return verdict

    original_load = getattr(module, "load", None)
    if original_load is not None and not getattr(original_load, "_rlaif_patched", False):
        def load(handle, *args, **kwargs):
            if checked("hub.load", handle) == "local":
                return original_load(handle, *args, **kwargs)
            return StandIn(f"hub.load({handle!r})")

        load._rlaif_patched = True
        module.load = load
    for class_name in ("KerasLayer", "Module"):
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type) or cls.__dict__.get("_rlaif_patched"):
            continue

        def __new__(klass, handle=None, *args, _entry=f"hub.{class_name}", **kwargs):
            if checked(_entry, handle) == "local":
                return object.__new__(klass)
            if _entry == "hub.KerasLayer":
                layer = _keras_identity(kwargs)
                if layer is not None:
                    return layer
            return StandIn(f"{_entry}({handle!r})")

        cls.__new__ = __new__
        cls._rlaif_patched = True

