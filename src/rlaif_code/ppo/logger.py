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
        line = (f"step {step:>5}  reward {metrics['reward_mean']:+.3f}±{metrics['reward_std']:.3f}  "
                f"kl {metrics['kl']:.3f}  entropy {metrics['entropy']:.3f}  clip {metrics['clip_fraction']:.3f}  "
                f"pg {metrics['policy_loss']:+.4f}  vf {metrics['value_loss']:.4f}  "
                f"ev {metrics['explained_variance']:+.2f}  len {metrics['response_length']:.1f}  "
                f"{metrics['tokens_per_s']:.0f} tok/s  {metrics['step_seconds']:.2f} s")
        if self.console is not None:
            self.console.print(line, highlight=False, soft_wrap=True)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.appender is not None:
            self.appender.close()
        if self.writer is not None:
            self.writer.close()
