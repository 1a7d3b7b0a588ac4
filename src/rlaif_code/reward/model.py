"""The reward model as a scorer: what it reads (`encode_texts`), loading it, and scoring texts.

What the model reads is fixed in one place, `encode_texts`: prompt + answer, cut from the left
when too long (the answer is what is judged), then eos. Training and `score_texts` (used by PPO)
both go through it, so they score the same token sequences.
"""

from __future__ import annotations

from typing import Any

from rlaif_code.core.artifacts import InputError


def encode_texts(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids the reward model reads: the text (its end kept when too long), then eos."""
    if max_length < 2:
        raise InputError(f"max_length must be at least 2, got {max_length}")
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    return [ids[-(max_length - 1):] + [tokenizer.eos_token_id] for ids in encoded]


def tokenizers_match(tok_a: Any, tok_b: Any) -> bool:
    """True when both tokenizers turn any text into the same ids (same vocabulary and eos)."""
    if tok_a is tok_b:
        return True
    if tok_a.get_vocab() != tok_b.get_vocab() or tok_a.eos_token_id != tok_b.eos_token_id:
        return False
    probe = ["###Instruction: Load ResNet-50.\n###Output: <<<api_call>>>: torch.hub.load('pytorch/vision', "
             "'resnet50', pretrained=True)", "  tabs\tand ünïcode → 数据\n\n"]
    return tok_a(probe)["input_ids"] == tok_b(probe)["input_ids"]


def check_tokenizers(policy_tokenizer: Any, reward_tokenizer: Any, *, retokenize: bool) -> bool:
    """Whether the policy's answers must go through text to reach the reward model.

    Different tokenizers are refused unless `retokenize` is set, in which case the caller
    must decode the policy's ids and score the text with `score_texts` (which re-encodes
    with the reward model's own tokenizer).
    """
    if tokenizers_match(policy_tokenizer, reward_tokenizer):
        return False
    if not retokenize:
        raise InputError("the reward model's tokenizer differs from the policy's; train the reward model from "
                         "M_SFT (the default), or allow re-tokenization through text")
    return True


def load_reward_base(path: str, num_labels: int = 1) -> tuple[Any, Any]:
    """A sequence-classification model (new scalar head) on M_SFT's weights, and its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from rlaif_code.core.models import load_tokenizer, resolve_model

    resolved = resolve_model(path)
    tokenizer = load_tokenizer(resolved, padding_side="right")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(resolved, num_labels=num_labels,
                                                                   dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a sequence-classification model from {path}: {err}") from err
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_reward_model(path: str, device: str | None = None) -> tuple[Any, Any]:
    """A trained reward model (the output of this stage), frozen, for scoring."""
    from rlaif_code.core.models import default_device

    model, tokenizer = load_reward_base(path, num_labels=1)
    return model.eval().requires_grad_(False).to(device or default_device()), tokenizer


def score_texts(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 16,
                max_length: int | None = None) -> list[float]:
    """The reward model's logit for each prompt + answer text (higher = more likely accepted)."""
    import torch

    if max_length is None:
        max_length = int(getattr(model.config, "reward_max_length", 0) or 512)
    device = next(model.parameters()).device
    tokenizer.padding_side = "right"
    scores: list[float] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            ids = encode_texts(tokenizer, texts[start:start + batch_size], max_length)
            batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(device)
            scores.extend(model(**batch).logits[:, 0].float().tolist())
    model.train(was_training)
    return scores
