"""Compact encoder files -> checked ComfyUI configs and state dicts (no comfy import).

Every check runs on the safetensors header before a tensor is read, so a wrong, truncated or mismatched file
fails fast with an error that names it. Tensor loading is injectable: the nodes pass ComfyUI's own
`comfy.utils.load_torch_file` (mmap / aimdo aware); tests use the default safetensors / torch reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from . import logic
from .core import checkpoint, errors

LoadFile = Callable[[str], dict[str, torch.Tensor]]


@dataclass
class CompactFile:
    """What the nodes need to build a compact T5 in ComfyUI."""

    path: str
    config: dict[str, Any]  # `logic.comfy_t5_config` output
    stored_dtype: str | None  # fp32 / fp16 / bf16 as stored in the file
    parameters: int
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def inspect_compact_file(path: str | Path, expected_width: int | None = None, family: str = "") -> CompactFile:
    """Check a file from its header only; raise a `t5_compact.errors` error naming the file when it is wrong.

    Reuses the core loader's header checks and geometry inference. Catches a T5-XXL or CLIP file picked in the
    compact slot, truncated or non-safetensors files, missing or mis-shaped tensors, geometry ComfyUI's T5
    cannot run, and (with `expected_width`) a projector width that does not match the diffusion model.
    """
    path = Path(path)
    if not path.is_file():
        raise errors.EncoderNotFoundError(f"{path}: no such file")
    ckpt = checkpoint.read_checkpoint(path)  # the config comes from the file's metadata (our export) or its shapes
    fields, shapes = checkpoint.resolve_fields(ckpt)  # header-only: no transformers model class is needed
    checkpoint.check_keys(fields, shapes, ckpt.source)
    comfy_config = logic.comfy_t5_config(SimpleNamespace(**fields), ckpt.source)
    logic.check_width(comfy_config, expected_width, ckpt.source, family)
    return CompactFile(
        path=str(path),
        config=comfy_config,
        stored_dtype=logic.stored_dtype(ckpt.dtypes),
        parameters=logic.parameter_count(comfy_config),
    )


def default_load_file(path: str) -> dict[str, torch.Tensor]:
    """Read every tensor of a `.safetensors` (or weights-only torch) file onto the CPU."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd)


def load_compact_file(
    path: str | Path, expected_width: int | None = None, family: str = "", load_file: LoadFile | None = None
) -> CompactFile:
    """`inspect_compact_file`, then the tensors renamed to ComfyUI's T5 names (`logic.KEY_PREFIX_MAP`)."""
    info = inspect_compact_file(path, expected_width, family)
    try:
        sd = (load_file or default_load_file)(info.path)
    except Exception as err:  # noqa: BLE001 - any reader failure here means damaged data
        raise errors.CorruptCheckpointError(f"{info.path}: could not read tensors ({err})") from err
    info.state_dict = logic.remap_state_dict(sd)
    return info
