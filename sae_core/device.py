"""The one device helper: `--device auto|cpu|cuda|cuda:N` -> a torch.device, checked."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """auto: cuda when available, else cpu. Refuses an unknown name or an absent GPU with a
    ValueError that says what to pass instead."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {device} asked for CUDA, but no CUDA device is available; use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type not in ("cpu", "mps"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {device!r}")
    return dev


def is_cuda(device: str | torch.device) -> bool:
    """True for any CUDA device (cuda, cuda:1, ...): what fp16 / autocast choices key on."""
    return torch.device(device).type == "cuda"
