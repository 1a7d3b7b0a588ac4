"""PPO training curves for the report, as PNG bytes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import read_jsonl

# Per-step metrics worth a panel, in panel order, with their titles; absent ones are skipped.
CURVES = (("reward_mean", "mean reward per rollout"), ("kl", "KL to reference"),
          ("response_length", "answer length (tokens)"))


def ppo_curves(run_dir: Path) -> tuple[bytes | None, dict[str, Any]]:
    """The curves of RUN_DIR/ppo/metrics.jsonl and each curve's (first, last) value; (None, {}) without PPO."""
    path = run_dir / "ppo" / "metrics.jsonl"
    if not path.is_file():
        return None, {}
    rows = read_jsonl(path, tolerate_torn_tail=True)
    if not rows:
        return None, {}
    # Imported here so a report without PPO (and the CLI's start-up) never loads matplotlib.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r.get("step", i) for i, r in enumerate(rows)]
    series = [(key, label) for key, label in CURVES if any(key in r for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(4.2 * max(1, len(series)), 3.2))
    axes = axes if hasattr(axes, "__len__") else [axes]
    # Without any known series there is still one (empty) panel: more axes than series.
    for ax, (key, label) in zip(axes, series, strict=False):
        ax.plot(steps, [r.get(key) for r in rows], marker=".", linewidth=1)
        ax.set_title(label)
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    first, last = rows[0], rows[-1]
    summary = {key: (first.get(key), last.get(key)) for key, _ in series}
    return buffer.getvalue(), summary
