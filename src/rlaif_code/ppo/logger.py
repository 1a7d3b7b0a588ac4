"""Per-step metrics: metrics.jsonl (every step), console and TensorBoard (every `log_every` steps)."""

from __future__ import annotations

from pathlib import Path

from rlaif_code.core.artifacts import JsonlAppender, atomic_write_jsonl, read_jsonl
from rlaif_code.core.training import TENSORBOARD


def resumed_appender(path: Path, start_step: int) -> JsonlAppender:
    """An appender to a per-step JSONL file whose rows after `start_step` are dropped first: a resume
    redoes those steps."""
    if path.exists():
        kept = [row for row in read_jsonl(path, tolerate_torn_tail=True) if row.get("step", 0) <= start_step]
        atomic_write_jsonl(path, kept)
    return JsonlAppender(path)


# (key, format) of the console line; a key the loop does not log (TRL's trainers log fewer) is left out
CONSOLE_FIELDS = [
    ("reward_mean", "reward {:+.3f}±{reward_std:.3f}"), ("kl", "kl {:.3f}"), ("entropy", "entropy {:.3f}"),
    ("clip_fraction", "clip {:.3f}"), ("policy_loss", "pg {:+.4f}"), ("value_loss", "vf {:.4f}"),
    ("explained_variance", "ev {:+.2f}"), ("response_length", "len {:.1f}"), ("tokens_per_s", "{:.0f} tok/s"),
    ("step_seconds", "{:.2f} s")]


class StepLogger:
    """metrics.jsonl (every step), console and TensorBoard (every `log_every` steps); main process only."""

    def __init__(self, out_dir: Path, start_step: int, log_every: int, enabled: bool) -> None:
        self.enabled, self.log_every = enabled, log_every
        self.appender = self.writer = self.console = None
        if not enabled:
            return
        self.appender = resumed_appender(out_dir / "metrics.jsonl", start_step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out_dir / TENSORBOARD), purge_step=start_step + 1)
        except ImportError:  # TensorBoard is optional
            self.writer = None
        try:
            from rich.console import Console

            self.console = Console()
        except ImportError:
            self.console = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.appender.write({"step": step, **metrics})
        if step % self.log_every:
            return
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(f"ppo/{key}", value, step)
            self.writer.flush()
        line = f"step {step:>5}  " + "  ".join(
            fmt.format(metrics[key], **metrics) for key, fmt in CONSOLE_FIELDS if key in metrics)
        if self.console is not None:
            self.console.print(line, highlight=False, soft_wrap=True)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.appender is not None:
            self.appender.close()
        if self.writer is not None:
            self.writer.close()
