"""Convert any loadable compact encoder to our folder format or to one ComfyUI-ready `.safetensors` file.

The ComfyUI file holds the unwrapped keys ComfyUI's T5 uses (`shared.weight`, `encoder.block.*`,
`encoder.final_layer_norm.weight`) plus `final_projection.0/.3`, every tensor in one dtype, and the full config as
JSON in the safetensors `__metadata__` (key `t5_compact_config`), so geometry and activation round-trip exactly.

Output is written inside one temp folder beside the destination, `<DST>.partial/`, then renamed into place with the
permissions the umask gives (like `cp`, not a temp file's 0600). Any error or Ctrl-C removes the temp folder; a
SIGKILL or power cut can leave only `<DST>.partial/`, which the next conversion to the same destination removes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from .fileio import follow_umask
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


PARTIAL_SUFFIX = ".partial"


def partial_path(dst: Path) -> Path:
    """The one temp folder a conversion writes in, beside `dst`: `<dst>.partial` (a kill can leave only this)."""
    return dst.with_name(dst.name + PARTIAL_SUFFIX)


@contextmanager
def _partial_folder(dst: Path) -> Iterator[Path]:
    """A fresh `<dst>.partial` folder (umask permissions), removed afterwards whatever happens."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(dst)
    if tmp.is_dir():  # left by a killed conversion to the same destination
        shutil.rmtree(tmp)
    elif tmp.exists():
        raise FileExistsError(f"{tmp}: exists and is not a folder left by t5-compact; remove it")
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_comfyui(model: T5CompactEncoder, path: str | os.PathLike, dtype: torch.dtype | str | None = None) -> Path:
    """Write `model` as one ComfyUI-ready `.safetensors` file, atomically: written inside `<path>.partial/`, given
    the permissions the umask allows (not the writer's 0600), then renamed into place."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a ComfyUI export is a single .safetensors file; name it *.safetensors")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; a ComfyUI export is one file (not replaced)")
    target = resolve_dtype(dtype)
    target = None if target == "auto" else target
    with _partial_folder(path) as tmp:
        file = tmp / path.name
        save_file(comfyui_state_dict(model, target), file, metadata=comfyui_metadata(model, target))
        follow_umask(file)
        os.replace(file, path)
    return path


def save_folder(model: T5CompactEncoder, path: str | os.PathLike, dtype: torch.dtype | str | None = None) -> Path:
    """Write `model` with `save_pretrained` (config.json + model.safetensors), cast to `dtype` first if given.

    The files are written in `<path>.partial/` and then moved into place (a new folder in one rename; into an
    existing folder file by file, weights first, replacing only the files `save_pretrained` owns), with the
    permissions the umask allows, so an interrupted conversion never leaves a half-written model.
    """
    from .loading import cast_encoder

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: is a file; the folder format writes a folder (not replaced)")
    target = resolve_dtype(dtype)
    if target not in (None, "auto"):
        cast_encoder(model, target)
    with _partial_folder(path) as tmp:
        model.save_pretrained(tmp)
        follow_umask(tmp)
        if not path.exists():
            os.replace(tmp, path)
            return path
        new = sorted(tmp.iterdir(), key=lambda f: f.name == "config.json")  # config last
        for stale in path.glob("model*.safetensors*"):  # old shards / index that the new weights replace
            if not (tmp / stale.name).exists():
                stale.unlink()
        for file in new:
            os.replace(file, path / file.name)
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
    if format == "comfyui" and dst.is_dir():
        raise IsADirectoryError(f"{dst}: is a folder; the comfyui format writes one file (not replaced)")
    if format == "folder" and dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"{dst}: is a file; the folder format writes a folder (not replaced)")
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
