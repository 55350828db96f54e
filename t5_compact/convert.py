"""Convert any loadable compact encoder to our folder format or to one ComfyUI-ready `.safetensors` file.

The ComfyUI file holds the unwrapped keys ComfyUI's T5 uses (`shared.weight`, `encoder.block.*`,
`encoder.final_layer_norm.weight`) plus `final_projection.0/.3`, every tensor in one dtype, and the full config as
JSON in the safetensors `__metadata__` (key `t5_compact_config`), so geometry and activation round-trip exactly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from .geometry import METADATA_CONFIG_KEY
from .loading import build_config, check_keys, read_checkpoint, resolve_dtype
from .modeling_t5_compact import T5CompactEncoder

Format = Literal["folder", "comfyui"]
FORMATS: tuple[str, ...] = ("folder", "comfyui")


def comfyui_state_dict(model: T5CompactEncoder, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's tensors under ComfyUI's T5 names, contiguous, on CPU, all in `dtype` (default: the model's)."""
    dtype = dtype or model.dtype
    state = model.state_dict()
    state.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight; ComfyUI ties it itself
    return {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in state.items()
    }


def comfyui_metadata(model: T5CompactEncoder, dtype: torch.dtype | None = None) -> dict[str, str]:
    """safetensors `__metadata__` for a single-file export: the format tag and the config as JSON."""
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.dtype = dtype or model.dtype
    config.architectures = [type(model).__name__]
    return {"format": "pt", METADATA_CONFIG_KEY: config.to_json_string(use_diff=False)}


def save_comfyui(model: T5CompactEncoder, path: str | os.PathLike, dtype: torch.dtype | str | None = None) -> Path:
    """Write `model` as one ComfyUI-ready `.safetensors` file (atomically: a temp file, then a rename)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a ComfyUI export is a single .safetensors file; name it *.safetensors")
    target = resolve_dtype(dtype)
    target = None if target == "auto" else target
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(comfyui_state_dict(model, target), tmp, metadata=comfyui_metadata(model, target))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_folder(model: T5CompactEncoder, path: str | os.PathLike, dtype: torch.dtype | str | None = None) -> Path:
    """Write `model` with `save_pretrained` (config.json + model.safetensors), cast to `dtype` first if given.

    A new folder is written next to its destination and renamed into place, so an interrupted conversion never
    leaves a half-written model; an existing folder is updated in place (save_pretrained replaces its own files).
    """
    from .loading import cast_encoder

    path = Path(path)
    target = resolve_dtype(dtype)
    if target not in (None, "auto"):
        cast_encoder(model, target)
    if path.exists():
        model.save_pretrained(path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def guess_format(dst: str | os.PathLike) -> Format:
    """`comfyui` for a `*.safetensors` destination, else `folder`."""
    return "comfyui" if str(dst).endswith(".safetensors") else "folder"


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    format: Format | None = None,
    dtype: torch.dtype | str | None = None,
    overwrite: bool = False,
    **load_kwargs,
) -> Path:
    """Load `src` (any source `T5CompactEncoder.from_pretrained` accepts) and write it to `dst`.

    `format`: `folder` (our `save_pretrained` layout) or `comfyui` (one `.safetensors` file); default from `dst`'s
    suffix. `dtype`: fp32/fp16/bf16 or None/"auto" to keep the source's. The result is re-read (headers only) and
    checked before returning.
    """
    dst = Path(dst)
    format = format or guess_format(dst)
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    if format == "comfyui" and dst.suffix != ".safetensors":
        raise ValueError(f"{dst}: the comfyui format writes one file; name it *.safetensors")
    if format == "folder" and dst.suffix in (".safetensors", ".bin", ".pth", ".pt"):
        raise ValueError(f"{dst}: the folder format writes a directory; drop the {dst.suffix} suffix or use comfyui")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst}: already exists; pass overwrite=True (--overwrite) to replace it")
    src_path = Path(src).expanduser()
    if src_path.exists() and dst.exists() and src_path.resolve() == dst.resolve():
        raise ValueError(f"{dst}: the destination is the source; write to another path")
    target = resolve_dtype(dtype)
    model = T5CompactEncoder.from_pretrained(src, torch_dtype=None if target == "auto" else target, **load_kwargs)
    if format == "comfyui":
        save_comfyui(model, dst, target)
    else:
        save_folder(model, dst, target)
    ckpt = read_checkpoint(dst)
    config, shapes = build_config(ckpt)
    check_keys(config, shapes, ckpt.source)
    return dst
