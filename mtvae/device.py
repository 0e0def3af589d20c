"""Device selection and seeding."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

from mtvae.errors import MTVAEError, check_choice

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if isinstance(name, torch.device):
        return name
    base = name.split(":")[0] if isinstance(name, str) else name
    check_choice("device", base, DEVICES)
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise MTVAEError("device 'cuda' was requested but no CUDA GPU is available; "
                         "use device='auto' or 'cpu'")
    return torch.device(name)


def device_name(device: torch.device | str) -> str:
    """A human-readable name: the GPU model, or the CPU model and core count."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may use the global RNG
    torch.manual_seed(seed)


def numeric_settings(device: str | torch.device) -> dict[str, object]:
    """The device-dependent numeric choices a run is made with (stored in its record).

    * CUDA: TF32 matrix products and convolutions (about 10 mantissa bits in the products,
      fp32 accumulation; ample for these models and several times faster on Ampere and
      later) unless ``MTVAE_TF32=0``; fused Adam (one kernel for all parameters).
    * CPU: full fp32 and PyTorch's default Adam, which keep CPU runs bit-identical to
      earlier records.
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        return {"tf32": os.environ.get("MTVAE_TF32", "1") != "0", "optimizer": "adam-fused"}
    return {"tf32": False, "optimizer": "adam"}


def apply_numeric_settings(device: str | torch.device) -> dict[str, object]:
    """Apply :func:`numeric_settings` to this process and return them."""
    settings = numeric_settings(device)
    if resolve_device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(settings["tf32"])
        torch.backends.cudnn.allow_tf32 = bool(settings["tf32"])
    return settings
