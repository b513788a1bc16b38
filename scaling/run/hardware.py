"""Device choice and the dense bf16 peak FLOP/s used for model FLOP utilisation (MFU)."""

from __future__ import annotations

import torch

from scaling.errors import ConfigError

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets.
PEAK_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "RTX 4090": 165e12,
}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is visible: use train.device=cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"train.device={name!r} is not known: choose auto, cpu, cuda or cuda:N")
    return torch.device(name)


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of a CUDA device, or None where it is unknown (CPUs, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16.items():
        if key in name:
            return value
    return None
