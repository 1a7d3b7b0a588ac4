"""Model loading: GGUF conversion (the real SmolLM2 file), pad tokens, bad paths, answer ends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlaif_code.core import models, precision
from rlaif_code.core.artifacts import InputError, read_stage_record
from rlaif_code.core.models import (
    ADDED_PAD_TOKEN,
    cut_at_stop,
    ensure_pad_token,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
    stop_token_ids,
)
from tiny import save_tiny_causal_lm, tiny_tokenizer


def test_smollm2_gguf_converts_once_into_a_trainable_model(tmp_path, monkeypatch):
    """The real GGUF (slow: ~1-2 minutes on 2 shared cores, once)."""
    cache = tmp_path / "cache"
    first = resolve_model("smollm2-135m", cache_dir=cache)
    assert (cache / models.file_sha256(models.embedded_model_path("smollm2-135m"))).samefile(first)
    record = read_stage_record(first)
    assert record["stage"] == "convert-gguf" and record["metrics"]["n_parameters"] > 100_000_000
    assert not list(cache.glob(".*.tmp")), "the temporary conversion directory must be gone"

    def must_not_convert(*_args, **_kwargs):
        raise AssertionError("the cached conversion should have been reused")

    monkeypatch.setattr(models, "_dequantized_model", must_not_convert)
    assert resolve_model("smollm2-135m", cache_dir=cache) == first
    # A path to the .gguf itself maps to the same cache entry (keyed by content).
    assert resolve_model(str(models.embedded_model_path("smollm2-135m")), cache_dir=cache) == first

    model, tokenizer = load_causal_lm(first, dtype="float32", device="cpu")
    assert getattr(model, "hf_quantizer", None) is None, "the saved model must not be flagged as quantized"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id

    # Real weights: a plain English sentence is far more likely than under a random model
    # (whose loss would be about ln(vocab) = 10.8 nats per token).
    enc = tokenizer("The cat sat on the mat. It was a sunny day, and the children played outside.",
                    return_tensors="pt")
    out = model(**enc, labels=enc["input_ids"])
    assert out.loss.item() < 5.0
    out.loss.backward()  # trainable: the quantized GGUF model refuses this
    assert model.get_input_embeddings().weight.grad is not None

    with torch.no_grad():
        generated = model.generate(**enc, max_new_tokens=5, do_sample=False,
                                   **models.generation_stop_kwargs(tokenizer))
    assert generated.shape[1] > enc["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(generated[0]), str)


def test_tiny_model_directory_loads_with_distinct_pad(tmp_path):
    path = save_tiny_causal_lm(tmp_path / "tiny")
    assert resolve_model(str(path)) == str(path)
    model, tokenizer = load_causal_lm(path, device="cpu", padding_side="left")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "left"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def _bare_tokenizer(with_unk: bool = True):
    """A byte-level BPE whose only special tokens are eos (and unk): no pad-like token at all."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    specials = ["<eos>", "<unk>"] if with_unk else ["<eos>"]
    tok = Tokenizer(tok_models.BPE(unk_token="<unk>" if with_unk else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["torch.hub.load('pytorch/vision', 'resnet50')"] * 4, trainer)
    extra = {"unk_token": "<unk>"} if with_unk else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", **extra)


def test_pad_prefers_an_existing_pad_token(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    tokenizer = load_tokenizer(tmp_path / "tok")
    tokenizer.pad_token = tokenizer.eos_token
    size = len(tokenizer)
    assert ensure_pad_token(tokenizer) is False
    assert tokenizer.pad_token == "<pad>" and len(tokenizer) == size


def test_pad_equal_to_eos_reuses_the_unused_unk_token():
    tokenizer = _bare_tokenizer(with_unk=True)
    size = len(tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token
    assert ensure_pad_token(tokenizer) is False
    assert tokenizer.pad_token == "<unk>" and len(tokenizer) == size


def test_pad_token_is_added_and_embeddings_grow_when_none_is_free(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _bare_tokenizer(with_unk=False)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, pad_token_id=None)
    model_dir = tmp_path / "bare"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    model, loaded = load_causal_lm(model_dir, device="cpu")
    assert loaded.pad_token == ADDED_PAD_TOKEN and len(loaded) == len(tokenizer) + 1
    assert model.get_input_embeddings().num_embeddings == len(loaded)
    assert model.config.pad_token_id == loaded.pad_token_id != loaded.eos_token_id


def test_unloadable_model_paths_name_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(InputError, match=str(missing)):
        resolve_model(str(missing))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(InputError, match="no config.json"):
        resolve_model(str(empty))
    text_file = tmp_path / "weights.txt"
    text_file.write_text("hello")
    with pytest.raises(InputError, match="not a .gguf"):
        resolve_model(str(text_file))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"definitely not gguf" * 8)
    with pytest.raises(InputError, match="junk.gguf"):
        resolve_model(str(junk), cache_dir=tmp_path / "cache")
    # A Hugging Face id is passed through untouched; only loading it needs the hub.
    assert resolve_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_unsupported_gguf_architecture_is_named(tmp_path):
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "oddarch")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(InputError, match="oddarch"):
        resolve_model(str(path), cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir()), "a failed conversion must leave no cache entry"


def test_answer_end_helpers():
    tokenizer = tiny_tokenizer()
    assert stop_token_ids(tokenizer)[0] == tokenizer.eos_token_id
    assert tokenizer.pad_token_id not in stop_token_ids(tokenizer)
    assert cut_at_stop(" <<<api_call>>>: x\n###Instruction: next") == (" <<<api_call>>>: x", True)
    assert cut_at_stop(" a ###Instruction: b") == (" a ", True)
    assert cut_at_stop(" <<<code>>>: import torch") == (" <<<code>>>: import torch", False)


def test_dtype_choice():
    cpu_auto = torch.bfloat16 if precision.cpu_has_native_bf16() else torch.float32
    assert models.torch_dtype("auto", "cpu") == cpu_auto
    assert models.torch_dtype("bfloat16") == torch.bfloat16
    assert models.torch_dtype("float32", "cuda") == torch.float32
