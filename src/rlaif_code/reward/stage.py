"""Reward stage: a scalar reward model (M_reward) trained on the AI feedback labels.

Design choices:
- The model is `AutoModelForSequenceClassification` with one output, initialised from
  M_SFT. It therefore shares the policy's tokenizer (PPO can score the policy's text
  without a vocabulary mismatch) and starts from weights that already read Gorilla prompts.
  The head is new; the pad token id is written into the config so the model reads its
  score at the last real token.
- Labels are pointwise (accepted / rejected per answer), so the loss is binary
  cross-entropy on the logit, not TRL's pairwise RewardTrainer loss. `pairwise_weight` adds
  a Bradley-Terry term over the synthetic (reference, broken variant) pairs of one prompt:
  a pointwise head learns "a real API is good" but ranked another prompt's API of the same
  domain above the reference (probe 0.47, results/torchhub-cpu-v2). Feedback labels are
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from rlaif_code.core.artifacts import STAGE_FILE, InputError, finished_result, write_stage_record
from rlaif_code.core.config import check, check_at_least, check_fraction
from rlaif_code.core.training import (
    CHECKPOINTS,
    TENSORBOARD,
    Bf16,
    process_state,
    resumable_checkpoint,
    tensorboard_dir,
    trainer_arguments,
)
from rlaif_code.reward import probes
from rlaif_code.reward.labels import (
    LabelledText,
    drop_duplicates,
    exact_api_auc,
    exact_api_within_prompt,
    feedback_path,
    heldout_metrics,
    load_feedback,
    split_heldout,
)
from rlaif_code.reward.model import encode_texts, load_reward_base, score_texts
from rlaif_code.reward.trainer import binary_reward_trainer_class, pair_collator


@dataclass
class RewardConfig:
    base_model: str = "runs/default/sft"  # M_SFT (any name rlaif_code.core.models.resolve_model takes)
    feedback: str = "runs/default/feedback/feedback.jsonl"  # the feedback stage's file (or its directory)
    # earlier rounds' feedback files, whose labels join these (iterated RLAIF refits on all labels so far)
    extra_feedback: list[str] = field(default_factory=list)
    # The data stage's out_dir: its reference answers and their broken variants (reward/probes.py)
    # are trained on and probed with; None: the feedback labels alone, no probes.
    synthetic_data_dir: str | None = "runs/default/data"
    synthetic_negatives: int = 2  # broken variants per training prompt, beside its reference answer (0: probes only)
    # weight of the Bradley-Terry loss -log sigmoid(r_reference - r_variant) on each synthetic pair, beside
    # the BCE on every text; 0: pointwise BCE only
    pairwise_weight: float = 0.0
    out_dir: str = "runs/default/reward"  # where the reward model (M_reward), its checkpoints and metrics go
    max_length: int = 512  # tokens of prompt + answer + eos; longer texts lose their start
    heldout_fraction: float = 0.1  # of the prompts (examples); 0 = no held-out evaluation
    max_examples: int | None = None  # first N feedback rows, for budgets
    epochs: float = 1.0  # passes over the training rows (fractions allowed)
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    learning_rate: float = 2e-5  # peak learning rate of AdamW (linear decay to 0)
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_ratio: float = 0.0  # share of the steps over which the learning rate rises from 0
    batch_size: int = 8  # rows per forward pass
    grad_accum: int = 1  # forward passes per optimizer step (effective batch: batch_size * grad_accum)
    eval_batch_size: int = 16  # rows per forward pass when scoring the held-out answers
    # Imbalanced labels: pos_weight weights accepted answers by n_rejected / n_accepted in the
    # loss, sampler draws training rows with class-balanced probabilities, none does neither.
    balance: Literal["pos_weight", "sampler", "none"] = "pos_weight"
    bf16: Bf16 = "auto"  # bf16 mixed precision: auto (on a GPU that supports it or an AMX CPU), on or off
    seed: int = 0  # seeds the held-out split and training (data order, dropout)
    save_steps: int = 200  # optimizer steps between checkpoints (an interrupted run resumes from the last)
    save_total_limit: int = 1  # checkpoints kept on disk
    logging_steps: int = 10  # optimizer steps between logged losses
    report_to: Literal["none", "tensorboard", "wandb"] = "tensorboard"  # TensorBoard events go to out_dir/tb

    # Fields that only set how long to train, how to log or how fast to score: a checkpoint stays usable.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({
        "epochs", "max_steps", "save_steps", "save_total_limit", "logging_steps", "report_to", "eval_batch_size"})

    def __post_init__(self) -> None:
        check_at_least(self, 1, "batch_size", "grad_accum", "eval_batch_size", "max_examples", "max_steps",
                       "save_steps", "save_total_limit", "logging_steps")
        check_at_least(self, 2, "max_length")  # room for at least one token and the eos
        check_at_least(self, 0, "synthetic_negatives", "pairwise_weight")
        check(not self.pairwise_weight or bool(self.synthetic_data_dir and self.synthetic_negatives),
              "pairwise_weight", "needs synthetic pairs: set synthetic_data_dir and synthetic_negatives >= 1, "
              "or pairwise_weight: 0")
        check_fraction(self, "warmup_ratio", "heldout_fraction")


def synthetic_rows(cfg: RewardConfig, references: list[probes.Reference], groups: set[str]) -> list[LabelledText]:
    """The training prompts' references and broken variants: separate texts, or pairs with pairwise_weight."""
    made = probes.training_pairs(references, groups, cfg.synthetic_negatives, cfg.seed)
    if not cfg.pairwise_weight:
        return [LabelledText(group, text, label) for group, positive, negatives in made
                for text, label in [(positive, 1), *((text, 0) for text in negatives)]]
    return [LabelledText(group, positive, 1, rejected=text) for group, positive, negatives in made
            for text in negatives or [None]]


def _check_both_labels(cfg: RewardConfig, train_rows: list[Any]) -> tuple[int, int]:
    n_pos = sum(r.label for r in train_rows)
    n_neg = len(train_rows) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"{feedback_path(cfg.feedback)}: the training split has only "
                         f"{'accepted' if n_neg == 0 else 'rejected'} answers ({len(train_rows)} rows); a reward "
                         "model needs both labels (more samples per prompt, a lower feedback threshold, or "
                         "feedback threshold_mode: relative or quantile)")
    return n_pos, n_neg


def build_trainer(cfg: RewardConfig, train_rows: list[Any], n_pos: int, n_neg: int) -> Any:
    """The Trainer on tokenized training rows, with the class balance `cfg.balance` asks for."""
    from datasets import Dataset
    from transformers import TrainingArguments, set_seed

    out = Path(cfg.out_dir)
    set_seed(cfg.seed)  # the new scalar head is drawn at random: the same one in every run and process
    model, tokenizer = load_reward_base(cfg.base_model)
    model.config.reward_max_length = cfg.max_length  # so score_texts reads texts the way training did
    ids = encode_texts(tokenizer, [r.text for r in train_rows], cfg.max_length)
    paired = [i for i, r in enumerate(train_rows) if r.rejected is not None]
    rejected_ids: list[list[int]] = [[] for _ in train_rows]
    if paired:
        for i, encoded in zip(paired, encode_texts(tokenizer, [str(train_rows[i].rejected) for i in paired],
                                                   cfg.max_length)):
            rejected_ids[i] = encoded
    dataset = Dataset.from_dict({"input_ids": ids, "labels": [float(r.label) for r in train_rows],
                                 "rejected_input_ids": rejected_ids})
    pos_weight = n_neg / n_pos if cfg.balance == "pos_weight" else None
    sample_weights = None
    if cfg.balance == "sampler":  # by the item's own label: a pair's item is its positive
        items_pos = sum(r.label for r in train_rows)
        sample_weights = [0.5 / items_pos if r.label else 0.5 / (len(train_rows) - items_pos) for r in train_rows]
    args = TrainingArguments(**trainer_arguments(cfg, out / CHECKPOINTS), remove_unused_columns=False)
    with tensorboard_dir(out / TENSORBOARD):
        return binary_reward_trainer_class()(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   data_collator=pair_collator(tokenizer), pos_weight=pos_weight,
                                   pairwise_weight=cfg.pairwise_weight, sample_weights=sample_weights,
                                   sampler_seed=cfg.seed)


def run(cfg: RewardConfig) -> dict[str, Any]:
    from rlaif_code.core.models import save_model

    out = Path(cfg.out_dir)
    if (done := finished_result(out, "reward", cfg)) is not None:
        return done
    # this round's file first: where an answer recurs, its newest label is the one kept
    labelled = [row for path in (cfg.feedback, *cfg.extra_feedback) for row in load_feedback(path, cfg.max_examples)]
    rows, duplicates = drop_duplicates(labelled)
    train_rows, heldout_rows = split_heldout(rows, cfg.heldout_fraction, cfg.seed)
    heldout_groups = {r.group for r in heldout_rows}
    references = probes.load_references(cfg.synthetic_data_dir) if cfg.synthetic_data_dir else []
    synthetic = synthetic_rows(cfg, references, {r.group for r in references} - heldout_groups)
    _check_both_labels(cfg, train_rows)  # the feedback's labels must make sense without the synthetic rows
    train_rows = train_rows + synthetic
    n_pairs = sum(r.rejected is not None for r in train_rows)
    n_pos = sum(r.label for r in train_rows)  # texts, not items: a pair's rejected text is a negative too
    n_neg = len(train_rows) - n_pos + n_pairs
    processes = process_state()
    processes.wait_for_everyone()  # under accelerate launch: all have looked at out_dir before any writes
    resume_from = resumable_checkpoint(out / CHECKPOINTS, cfg)
    if processes.is_main_process:
        (out / STAGE_FILE).unlink(missing_ok=True)  # an earlier run's record must not vouch for this one's files
    trainer = build_trainer(cfg, train_rows, n_pos, n_neg)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - start

    metrics: dict[str, Any] = {
        "n_rows": len(rows),
        "duplicates_dropped": duplicates,
        "n_synthetic": len(synthetic),
        "n_train": len(train_rows),
        "n_train_pairs": n_pairs,
        "n_heldout": len(heldout_rows),
        "train_positive_rate": n_pos / (n_pos + n_neg),
        "balance": cfg.balance,
        "pos_weight": trainer.pos_weight,
        "train_loss": None if math.isnan(result.training_loss) else float(result.training_loss),
        "global_step": int(trainer.state.global_step),
        "resumed_from": resume_from,
        "wall_time_s": wall,
    }
    tokenizer = trainer.processing_class
    if heldout_rows:
        scores = score_texts(trainer.model, tokenizer, [r.text for r in heldout_rows], cfg.eval_batch_size,
                             cfg.max_length)
        metrics.update(heldout_metrics(scores, [r.label for r in heldout_rows]))
        metrics["heldout_exact_api_roc_auc"] = exact_api_auc(scores, heldout_rows)
        metrics.update(exact_api_within_prompt(scores, heldout_rows))
    if references and heldout_groups:
        metrics["probe_accuracy"] = probes.probe_accuracies(
            probes.probe_sets(references, heldout_groups, cfg.seed),
            lambda texts: score_texts(trainer.model, tokenizer, texts, cfg.eval_batch_size, cfg.max_length))
    if trainer.is_world_process_zero():  # one writer; the other processes wait for it
        save_model(trainer.model, tokenizer, out)
        write_stage_record(out, "reward", cfg, metrics=metrics, outputs=["model.safetensors", "config.json"])
    trainer.accelerator.wait_for_everyone()
    return metrics
