"""Hermetic hub: model loading answers from the API database, inside the sandbox.

Installed by bootstrap.py before the snippet runs. A post-import hook (a meta-path
finder wrapping the real loaders) patches the model-loading entry points of
transformers, diffusers, sentence-transformers, huggingface_hub, torch.hub and
tensorflow_hub right after their modules execute, so nothing is imported early:

* an id found in the API database -> a `StandIn`: a permissive mock that returns
  itself from attribute access, calls and indexing, behaves as 0 in arithmetic and
  as a zero array to numpy, and answers torch functions with itself
  (`__torch_function__`), so code around the load can run;
* an id not in the database -> the error the real library raises for a repository
  that does not exist (OSError from transformers-style loaders, RepositoryNotFoundError
  from huggingface_hub downloads, torch.hub's 404 / "Cannot find callable");
* a local path that exists -> the real loader.

Inputs the snippet reads are stood in too: a missing file it reads is made first with
content of the kind it expects (inputs.py: images, audio, text, tables, JSON, arrays,
model files), and http(s) fetches are answered in-process with such content (network.py:
requests, httpx, urllib), so no socket is opened; a free name that says it is an input
(`image_path`, `article_text`, `X`) is bound to such a stand-in (placeholders.py); each is
recorded in `STAND_INS`.

Standard library only; the patched libraries are imported by the snippet, not here.
This module is the entry point (which module gets which patch, and the import hook);
`answers` holds the stand-in and the verdicts, `patches` the model-loading patches,
`inputs` and `network` the input patches, `content` the stand-in contents. bootstrap.py
loads them as the package `_rlaif_hermetic` from the sandbox's support folder.
"""

import importlib.abc
import sys

from . import inputs, network, patches, placeholders
from .answers import CALLS, STAND_INS, configure

__all__ = ["CALLS", "STAND_INS", "install", "bind_placeholders"]

bind_placeholders = placeholders.bind  # bootstrap.py calls it on the snippet's globals before the run

_PREFIX_SCANS = ("transformers.", "diffusers.", "huggingface_hub.")
_CONSTRUCTORS = {"SentenceTransformer": "SentenceTransformer", "CrossEncoder": "CrossEncoder",
                 "SparseEncoder": "SparseEncoder"}


def _after_import(module):
    name = module.__name__
    try:
        if name.startswith(_PREFIX_SCANS):
            patches.scan_classes(module)
        if name == "transformers.pipelines":
            patches.patch_pipeline(module)
        elif name in ("huggingface_hub.file_download", "huggingface_hub._snapshot_download"):
            patches.patch_hub_downloads(module)
        elif name == "huggingface_hub.keras_mixin":
            patches.patch_keras_mixin(module)
        elif name.startswith("sentence_transformers"):
            for class_name, entry in _CONSTRUCTORS.items():
                cls = vars(module).get(class_name)
                if isinstance(cls, type) and cls.__module__ == name:
                    patches.patch_constructor(cls, entry)
        elif name == "torch":
            patches.patch_tensor_factories(module)
        elif name == "torch.hub":
            patches.patch_torch_hub(module)
        elif name == "torch.serialization":
            patches.patch_loaders_of_files(module, ("load",))
        elif name == "joblib.numpy_pickle":
            patches.patch_loaders_of_files(module, ("load",))
        elif name in ("tensorflow_hub.module_v2", "tensorflow_hub.keras_layer", "tensorflow_hub.module",
                      "tensorflow_hub"):
            patches.patch_tensorflow_hub(module)
        elif name in _INPUT_PATCHES:
            _INPUT_PATCHES[name](sys.modules.get(name, module))
        if name in ("diffusers.utils.loading_utils", "transformers.image_utils"):
            inputs.patch_load_image(module)
    except Exception as exc:  # a library version we do not know: say so, never hide it
        print(f"rlaif hermetic: could not patch {name}: {type(exc).__name__}: {exc}", file=sys.stderr)


# Readers of input files and HTTP clients: one module each, patched by exact name.
_INPUT_PATCHES = {
    "PIL.Image": lambda m: inputs.patch_readers(m, ("open",), "image"),
    "soundfile": inputs.patch_soundfile,
    "torchaudio": lambda m: inputs.patch_readers(m, ("load", "info"), "audio"),
    "cv2": inputs.patch_cv2,
    "torchvision.io": lambda m: inputs.patch_readers(m, ("read_image", "decode_image", "read_file"), "image"),
    "datasets.load": inputs.patch_datasets,
    "pandas": inputs.patch_pandas,
    "requests.adapters": network.patch_requests,
    "httpx._transports.default": network.patch_httpx,
    "httpx2._transports.default": network.patch_httpx,
    "urllib.request": network.patch_urllib,
}

_WATCHED_ROOTS = ("transformers", "diffusers", "huggingface_hub", "sentence_transformers", "torch", "joblib",
                  "tensorflow_hub")
_WATCHED_MODULES = frozenset(("torch.hub", "torch.serialization", *_INPUT_PATCHES))


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _after_import(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCHED_MODULES:
            if fullname.split(".")[0] not in _WATCHED_ROOTS:
                return None
            if fullname.startswith("torch."):
                return None  # torch has hundreds of modules; only two matter
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install(mode, known, workdir):
    if mode != "hermetic":
        return
    configure(known, workdir)
    inputs.install_open()
    import pickle

    inputs.patch_pickle(pickle)
    for name in _WATCHED_MODULES:  # imported before the hook (urllib.request by a stdlib module)
        if name in _INPUT_PATCHES and name in sys.modules:
            _after_import(sys.modules[name])
    sys.meta_path.insert(0, _PostImportFinder())
