"""Tiny randomly initialised models and a tokenizer built in-process, for fast tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from conftest import gorilla_dir

SPECIAL = ["<pad>", "<eos>", "<unk>"]


@lru_cache(maxsize=1)
def tiny_tokenizer():
    """A byte-level BPE (vocab ~600) trained on APIBench text, wrapped as a HF fast tokenizer."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    with (gorilla_dir() / "apibench" / "torchhub_eval.json").open() as handle:
        texts = [json.loads(line)["code"] for line in handle]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def tiny_causal_lm(seed: int = 0, hidden: int = 32, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg), tok


def save_tiny_causal_lm(path: Path, seed: int = 0) -> Path:
    model, tok = tiny_causal_lm(seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
