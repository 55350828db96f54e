"""Bytes on disk per storage dtype, computed exactly from parameter counts, and checked by writing a file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

# Storage dtypes reported for every encoder; fp8 (e4m3) where this torch has it.
DISK_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
if hasattr(torch, "float8_e4m3fn"):
    DISK_DTYPES["fp8"] = torch.float8_e4m3fn


def weight_bytes(params: int) -> dict[str, int]:
    """Bytes of the weights stored in each of `DISK_DTYPES` (every tensor in that dtype; headers excluded)."""
    return {name: params * torch.empty((), dtype=dtype).element_size() for name, dtype in DISK_DTYPES.items()}


def written_safetensors_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """Size of the `.safetensors` file of `model`'s weights cast to `dtype` (tied copies stored once)."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    state: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():  # named_parameters skips tied duplicates
        if id(param) not in seen:
            seen.add(id(param))
            state[name] = param.detach().to("cpu", dtype).contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(state, str(path), metadata={"format": "pt"})
        return path.stat().st_size
