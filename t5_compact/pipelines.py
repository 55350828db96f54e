"""Put a compact encoder into stock diffusers FLUX / SD3 pipelines: family detection, slots, width checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .errors import CorruptCheckpointError, EncoderNotFoundError, WidthMismatchError
from .loading import cast_encoder, is_offline, looks_like_repo_id, resolve_dtype
from .modeling_t5_compact import T5CompactEncoder

# Which pipeline slot holds the T5 encoder, by family.
ENCODER_SLOTS = {"flux": "text_encoder_2", "sd3": "text_encoder_3"}


def detect_family(pipeline_or_name: object) -> str:
    """`"flux"` or `"sd3"` for a pipeline object, class, or class name (`FluxPipeline`, `StableDiffusion3...`)."""
    if isinstance(pipeline_or_name, str):
        name = pipeline_or_name
    elif isinstance(pipeline_or_name, type):
        name = pipeline_or_name.__name__
    else:
        name = type(pipeline_or_name).__name__
    if name.startswith("Flux"):
        return "flux"
    if name.startswith("StableDiffusion3"):
        return "sd3"
    raise ValueError(f"{name}: not a FLUX or Stable Diffusion 3 pipeline; t5-compact supports those two families")


def read_pipeline_config(base: str | os.PathLike, filename: str = "model_index.json", **hub_kwargs) -> dict:
    """A JSON file of a pipeline (local folder or hub repo), read without loading any weights."""
    path = Path(base).expanduser() / filename
    if not Path(base).expanduser().exists():
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

        if not looks_like_repo_id(str(base)):
            raise EncoderNotFoundError(f"{base}: no such pipeline folder (and not a hub repo id like 'owner/name')")
        hub_kwargs.setdefault("local_files_only", is_offline())
        try:
            path = Path(hf_hub_download(str(base), filename, **hub_kwargs))
        except (LocalEntryNotFoundError, RepositoryNotFoundError, EntryNotFoundError, OSError) as err:
            why = " while HF_HUB_OFFLINE is set" if is_offline() else ""
            raise EncoderNotFoundError(
                f"{base}: cannot read {filename}: not a local folder, and not available from the hub{why} ({err})"
            ) from err
    if not path.exists():
        raise EncoderNotFoundError(f"{path}: missing; is {base} a diffusers pipeline folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCheckpointError(f"{path}: not a readable JSON file ({err})") from err


def pipeline_family(base: str | os.PathLike, **hub_kwargs) -> str:
    """`"flux"` or `"sd3"` for a pipeline folder or hub repo, from its `model_index.json`."""
    index = read_pipeline_config(base, **hub_kwargs)
    if "_class_name" not in index:
        raise CorruptCheckpointError(f"{base}/model_index.json: no '_class_name'; is this a diffusers pipeline?")
    return detect_family(index["_class_name"])


def check_width(encoder: torch.nn.Module, joint_attention_dim: int, where: str = "the transformer") -> None:
    """Raise `WidthMismatchError` unless the encoder's output width equals the transformer's text width."""
    width = encoder.config.projection_out_dim if isinstance(encoder, T5CompactEncoder) else encoder.config.d_model
    if width != joint_attention_dim:
        raise WidthMismatchError(
            f"{getattr(encoder, 'name_or_path', '') or type(encoder).__name__}: the encoder outputs width {width} "
            f"but {where} expects joint_attention_dim={joint_attention_dim}; use a student trained for this model"
        )


def load_pipeline(
    base: str | os.PathLike,
    encoder: str | os.PathLike | T5CompactEncoder,
    torch_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    **pipeline_kwargs,
):
    """Load a FLUX or SD3 pipeline (folder or hub id) with `encoder` in its T5 slot.

    Detects the family from `model_index.json`, checks the encoder's width against the transformer's
    `joint_attention_dim` before the transformer is loaded, and casts the encoder to the pipeline's dtype (a fp32
    encoder beside a bf16 transformer otherwise fails with a matmul dtype error). `torch_dtype` (alias `dtype`) is
    the pipeline's dtype; None/"auto" keeps diffusers' default. Other keyword arguments go to
    `DiffusionPipeline.from_pretrained`.
    """
    from diffusers import DiffusionPipeline

    if "dtype" in pipeline_kwargs:
        if torch_dtype is not None:
            raise ValueError("pass one of torch_dtype and dtype, not both")
        torch_dtype = pipeline_kwargs.pop("dtype")
    hub_kwargs = {k: pipeline_kwargs[k] for k in ("revision", "token", "cache_dir") if k in pipeline_kwargs}
    family = pipeline_family(base, **hub_kwargs)
    slot = ENCODER_SLOTS[family]
    if slot in pipeline_kwargs:
        raise TypeError(f"pass the compact encoder as `encoder`, not as {slot}=")
    transformer_config = read_pipeline_config(base, "transformer/config.json", **hub_kwargs)
    dtype = resolve_dtype(torch_dtype)
    dtype = None if dtype == "auto" else dtype
    if not isinstance(encoder, T5CompactEncoder):
        encoder = T5CompactEncoder.from_pretrained(encoder, torch_dtype=dtype)
    check_width(encoder, transformer_config["joint_attention_dim"], f"{base} (transformer/config.json)")
    if dtype is not None:
        pipeline_kwargs["dtype"] = dtype  # diffusers >= 0.42 (our lower bound) names it `dtype`
    pipe = DiffusionPipeline.from_pretrained(base, **{slot: encoder}, **pipeline_kwargs)
    cast_encoder(encoder, pipe.transformer.dtype)
    encoder.eval()
    if device is not None:
        pipe.to(device)
    return pipe
