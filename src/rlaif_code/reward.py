"""Reward stage: a scalar reward model (M_reward) trained on the AI feedback labels.

Design choices:
- The model is `AutoModelForSequenceClassification` with one output, initialised from
  M_SFT. It therefore shares the policy's tokenizer (PPO can score the policy's text
  without a vocabulary mismatch) and starts from weights that already read Gorilla prompts.
  The head is new; the pad token id is written into the config so the model reads its
  score at the last real token.
- Labels are pointwise (accepted / rejected per answer), so the loss is binary
  cross-entropy on the logit, not TRL's pairwise RewardTrainer loss. Feedback labels are
  usually imbalanced; `balance` either weights the positive class by n_neg / n_pos
  (`pos_weight`) or draws training rows with class-balanced probabilities (`sampler`).
- Training runs in transformers' `Trainer` (checkpoints, resume, logging, mixed precision),
  with only `compute_loss` and the sampler replaced.
- The held-out split is by example (prompt), seeded: answers to one prompt never land on
  both sides, so held-out accuracy and ROC-AUC measure generalisation to new prompts.
- What the model reads is fixed in one place, `encode_texts`: prompt + answer, cut from the
  left when too long (the answer is what is judged), then eos. `score_texts` (used by PPO)
  and training both go through it, so they score the same token sequences.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlaif_code.artifacts import (
    STAGE_FILE,
    InputError,
    iter_jsonl,
    read_stage_record,
    stage_is_done,
    write_stage_record,
)
from rlaif_code.config import to_dict

CHECKPOINTS = "checkpoints"
_LABELS = {"accepted": 1, "rejected": 0, True: 1, False: 0}


@dataclass
class RewardConfig:
    base_model: str = "runs/default/sft"  # M_SFT (any name rlaif_code.models.resolve_model takes)
    feedback: str = "runs/default/feedback/feedback.jsonl"  # the feedback stage's file (or its directory)
    out_dir: str = "runs/default/reward"
    max_length: int = 512  # tokens of prompt + answer + eos
    heldout_fraction: float = 0.1  # of the prompts (examples); 0 = no held-out evaluation
    max_examples: int | None = None  # first N feedback rows, for budgets
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    batch_size: int = 8
    grad_accum: int = 1
    eval_batch_size: int = 16
    balance: Literal["pos_weight", "sampler", "none"] = "pos_weight"
    bf16: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    save_steps: int = 200
    save_total_limit: int = 1
    logging_steps: int = 10
    report_to: Literal["none", "tensorboard", "wandb"] = "tensorboard"  # TensorBoard events go to out_dir/tb


_BUDGET_FIELDS = {"epochs", "max_steps", "save_steps", "save_total_limit", "logging_steps", "report_to",
                  "eval_batch_size"}


# ---------------------------------------------------------------- data


@dataclass
class LabelledText:
    group: str  # example_id (or the prompt): held-out splits never separate one group
    text: str  # prompt + answer
    label: int  # 1 accepted, 0 rejected


def feedback_path(feedback: str | Path) -> Path:
    path = Path(feedback)
    return path / "feedback.jsonl" if path.is_dir() else path


def load_feedback(feedback: str | Path, max_examples: int | None = None) -> list[LabelledText]:
    """(prompt + answer, 0/1) from the feedback stage's rows; bad rows name file:line."""
    path = feedback_path(feedback)
    rows = []
    for lineno, row in iter_jsonl(path):
        for key in ("prompt", "text"):
            if not isinstance(row.get(key), str):
                raise InputError(f"{path}:{lineno}: missing string field '{key}'")
        label = row.get("label")
        if isinstance(label, str):
            label = label.strip().lower()
        if not isinstance(label, (str, bool)) or label not in _LABELS:
            raise InputError(f"{path}:{lineno}: 'label' = {row.get('label')!r}; expected \"accepted\", "
                             "\"rejected\", true or false")
        group = str(row.get("example_id") or row["prompt"])
        rows.append(LabelledText(group=group, text=row["prompt"] + row["text"], label=_LABELS[label]))
        if max_examples is not None and len(rows) >= max_examples:
            break
    if not rows:
        raise InputError(f"{path}: no labelled answers to train on")
    return rows


def split_heldout(rows: list[LabelledText], fraction: float, seed: int) -> tuple[list[LabelledText],
                                                                                 list[LabelledText]]:
    """A seeded split by group (example): (train, held-out)."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"heldout_fraction must be in [0, 1), got {fraction}")
    groups = sorted({row.group for row in rows})
    if fraction == 0.0:
        return rows, []
    if len(groups) < 2:
        raise InputError("a held-out split needs answers to at least 2 different prompts "
                         "(or set heldout_fraction: 0)")
    random.Random(seed).shuffle(groups)
    n_heldout = min(len(groups) - 1, max(1, round(len(groups) * fraction)))
    heldout = set(groups[:n_heldout])
    return [r for r in rows if r.group not in heldout], [r for r in rows if r.group in heldout]


def encode_texts(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids the reward model reads: the text (its end kept when too long), then eos."""
    if max_length < 2:
        raise InputError(f"max_length must be at least 2, got {max_length}")
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    return [ids[-(max_length - 1):] + [tokenizer.eos_token_id] for ids in encoded]


# ---------------------------------------------------------------- models


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

    from rlaif_code.models import load_tokenizer, resolve_model

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
    from rlaif_code.models import default_device

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


def heldout_metrics(scores: list[float], labels: list[int]) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    predictions = [int(s > 0) for s in scores]
    metrics: dict[str, Any] = {
        "heldout_n": len(labels),
        "heldout_positive_rate": sum(labels) / len(labels),
        "heldout_accuracy": sum(p == y for p, y in zip(predictions, labels)) / len(labels),
        "heldout_balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        # predicting the majority label everywhere scores this: the bar the model must clear
        "heldout_majority_accuracy": max(sum(labels), len(labels) - sum(labels)) / len(labels),
    }
    both = 0 < sum(labels) < len(labels)
    metrics["heldout_roc_auc"] = float(roc_auc_score(labels, scores)) if both else None
    return metrics


# ---------------------------------------------------------------- training


def _trainer_class() -> type:
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class BinaryRewardTrainer(Trainer):
        """`Trainer` with BCE-with-logits on the scalar head and optional class-balanced sampling."""

        def __init__(self, *args: Any, pos_weight: float | None = None,
                     sample_weights: list[float] | None = None, sampler_seed: int = 0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.pos_weight = pos_weight
            self.sample_weights = sample_weights
            self.sampler_seed = sampler_seed

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            labels = inputs.pop("labels").float()
            outputs = model(**inputs)
            logits = outputs.logits[:, 0].float()
            pos_weight = None
            if self.pos_weight is not None:
                pos_weight = torch.tensor(self.pos_weight, device=logits.device)
            loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            if self.sample_weights is None:
                return super()._get_train_sampler(train_dataset)
            generator = torch.Generator().manual_seed(self.sampler_seed)
            return torch.utils.data.WeightedRandomSampler(self.sample_weights, len(self.sample_weights),
                                                          replacement=True, generator=generator)

    return BinaryRewardTrainer


def _identity(cfg: RewardConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items() if k not in _BUDGET_FIELDS}


def run(cfg: RewardConfig) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, TrainingArguments

    from rlaif_code.models import save_model
    from rlaif_code.sft import record_checkpoint_identity, resumable_checkpoint, tensorboard_dir, use_bf16

    out = Path(cfg.out_dir)
    if stage_is_done(out, "reward", cfg):
        return {**(read_stage_record(out) or {}).get("metrics", {}), "skipped": True}
    if cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise InputError("batch_size and grad_accum must be at least 1")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise InputError(f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    rows = load_feedback(cfg.feedback, cfg.max_examples)
    train_rows, heldout_rows = split_heldout(rows, cfg.heldout_fraction, cfg.seed)
    n_pos = sum(r.label for r in train_rows)
    n_neg = len(train_rows) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"{feedback_path(cfg.feedback)}: the training split has only "
                         f"{'accepted' if n_neg == 0 else 'rejected'} answers ({len(train_rows)} rows); a reward "
                         "model needs both labels (more or better samples, a lower feedback threshold, or "
                         "feedback threshold_mode: quantile)")

    ckpt_dir = out / CHECKPOINTS
    resume_from = resumable_checkpoint(ckpt_dir, _identity(cfg))
    (out / STAGE_FILE).unlink(missing_ok=True)  # an earlier run's record must not vouch for this one's files
    model, tokenizer = load_reward_base(cfg.base_model)
    model.config.reward_max_length = cfg.max_length  # so score_texts reads texts the way training did
    ids = encode_texts(tokenizer, [r.text for r in train_rows], cfg.max_length)
    dataset = Dataset.from_dict({"input_ids": ids, "labels": [float(r.label) for r in train_rows]})

    pos_weight = n_neg / n_pos if cfg.balance == "pos_weight" else None
    sample_weights = None
    if cfg.balance == "sampler":
        sample_weights = [0.5 / n_pos if r.label else 0.5 / n_neg for r in train_rows]
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        bf16=use_bf16(cfg.bf16),
        seed=cfg.seed,
        data_seed=cfg.seed,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=cfg.report_to,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
    )
    with tensorboard_dir(out / "tb"):
        trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   data_collator=DataCollatorWithPadding(tokenizer), pos_weight=pos_weight,
                                   sample_weights=sample_weights, sampler_seed=cfg.seed)
    record_checkpoint_identity(ckpt_dir, _identity(cfg))
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - start

    metrics: dict[str, Any] = {
        "n_rows": len(rows),
        "n_train": len(train_rows),
        "n_heldout": len(heldout_rows),
        "train_positive_rate": n_pos / len(train_rows),
        "balance": cfg.balance,
        "pos_weight": pos_weight,
        "train_loss": None if math.isnan(result.training_loss) else float(result.training_loss),
        "global_step": int(trainer.state.global_step),
        "resumed_from": resume_from,
        "wall_time_s": wall,
    }
    if heldout_rows:
        scores = score_texts(trainer.model, tokenizer, [r.text for r in heldout_rows], cfg.eval_batch_size,
                             cfg.max_length)
        metrics.update(heldout_metrics(scores, [r.label for r in heldout_rows]))
    save_model(trainer.model, tokenizer, out)
    write_stage_record(out, "reward", cfg, metrics=metrics, outputs=["model.safetensors", "config.json"])
    return metrics
