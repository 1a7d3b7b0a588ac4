"""Where bf16 pays: a GPU that supports it, or a CPU with AMX bf16 tile instructions.

On an AMX CPU (Intel Sapphire Rapids and later) bf16 matmuls run on the tile units: measured
on 2 such cores, SmolLM2-135M trained at 2.4x float32's tokens/s under bf16 autocast (587 vs
249). On CPUs without AMX, bf16 is emulated and slower than float32, so "auto" stays float32.
"""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def cpu_has_amx_bf16() -> bool:
    """Linux reports the flag in /proc/cpuinfo; elsewhere we cannot tell cheaply, so no."""
    try:
        return amx_bf16_in_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return False


def amx_bf16_in_cpuinfo(text: str) -> bool:
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in text.splitlines())


def bf16_pays(device: str) -> bool:
    """Whether "auto" precision picks bf16 on `device` ("cpu", "cuda", "cuda:1", ...)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device == "cpu" and cpu_has_amx_bf16()
