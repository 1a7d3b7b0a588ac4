"""Rejection-sampling fine-tuning (RFT), the baseline PPO has to beat: M_SFT trained further on the
answers the feedback accepted, with the SFT stage's own trainer.

Output (in `out_dir`): `data/train.jsonl` (each accepted (prompt, answer) once, as the data stage
writes rows: `prompt`, `target`), `model/` (the SFT stage's output: the model, checkpoints, a
stage.json), and `stage.json`. A killed run resumes inside the SFT stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import (
    InputError,
    atomic_write_jsonl,
    finished_result,
    iter_jsonl,
    write_stage_record,
)
from rlaif_code.core.config import check_at_least


@dataclass
class RFTConfig:
    enabled: bool = True  # in `rlaif run`: train and evaluate the RFT baseline beside PPO
    base_model: str = "runs/default/sft"  # M_SFT, trained further
    feedback: str = "runs/default/feedback/feedback.jsonl"  # the feedback stage's labels (accepted rows)
    out_dir: str = "runs/default/rft"  # data/train.jsonl and model/ go here
    epochs: float = 1.0  # passes over the accepted answers
    learning_rate: float = 3e-5  # peak learning rate of AdamW (linear decay to 0)
    batch_size: int = 8  # rows per forward pass
    max_length: int = 512  # tokens of prompt + answer
    seed: int = 0  # seeds training

    def __post_init__(self) -> None:
        check_at_least(self, 1, "batch_size", "max_length")


def accepted_rows(feedback: str | Path) -> list[dict[str, str]]:
    """Each accepted (prompt, answer) once, in the feedback file's order."""
    path = Path(feedback) / "feedback.jsonl" if Path(feedback).is_dir() else Path(feedback)
    seen: set[tuple[str, str]] = set()
    rows = []
    for lineno, row in iter_jsonl(path):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("text"), str):
            raise InputError(f"{path}:{lineno}: missing string field 'prompt' or 'text'")
        key = (row["prompt"], row["text"].strip())
        if row.get("label") == "accepted" and key[1] and key not in seen:
            seen.add(key)
            rows.append({"example_id": row.get("example_id"), "prompt": row["prompt"], "target": row["text"]})
    if not rows:
        raise InputError(f"{path}: no accepted answer to fine-tune on (rft.enabled: false to leave RFT out)")
    return rows


def run(cfg: RFTConfig) -> dict[str, Any]:
    from rlaif_code.sft.stage import SFTConfig
    from rlaif_code.sft.stage import run as run_sft

    out = Path(cfg.out_dir)
    if not cfg.enabled:
        return {"skipped": "rft.enabled is false"}
    if (done := finished_result(out, "rft", cfg)) is not None:
        return done
    rows = accepted_rows(cfg.feedback)
    atomic_write_jsonl(out / "data" / "train.jsonl", rows)
    metrics = run_sft(SFTConfig(model=cfg.base_model, data_dir=str(out / "data"), out_dir=str(out / "model"),
                                epochs=cfg.epochs, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                                max_length=cfg.max_length, seed=cfg.seed, keep_checkpoints=False))
    metrics = {"n_accepted": len(rows), **{k: v for k, v in metrics.items() if k != "skipped"}}
    write_stage_record(out, "rft", cfg, metrics=metrics, outputs=["data/train.jsonl", "model"])
    return metrics
