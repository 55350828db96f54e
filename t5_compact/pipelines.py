"""Put a compact encoder into stock diffusers FLUX / SD3 pipelines: family detection, slots, width checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .errors import EncoderNotFoundError, WidthMismatchError
from .loading import cast_encoder, resolve_dtype
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
    path = Path(base) / filename
    if not Path(base).exists():
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

        try:
            path = Path(hf_hub_download(str(base), filename, **hub_kwargs))
        except (LocalEntryNotFoundError, RepositoryNotFoundError, EntryNotFoundError, OSError) as err:
            raise EncoderNotFoundError(
                f"{base}: cannot read {filename} (not a local folder, and not available from the hub cache: {err})"
            ) from err
    if not path.exists():
        raise EncoderNotFoundError(f"{path}: missing; is {base} a diffusers pipeline folder?")
    return json.loads(path.read_text())


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
    """Load a FLUX or SD3 pipeline with `encoder` in its T5 slot.

    Detects the family from `model_index.json`, checks the encoder's width against the transformer's
    `joint_attention_dim` before loading the transformer, and casts the encoder to the pipeline's dtype (a fp32
    encoder beside a bf16 transformer otherwise fails with a matmul dtype error).
    """
    import diffusers
    from diffusers import DiffusionPipeline
    from packaging import version

    hub_kwargs = {k: pipeline_kwargs[k] for k in ("revision", "token", "cache_dir") if k in pipeline_kwargs}
    family = detect_family(read_pipeline_config(base, **hub_kwargs)["_class_name"])
    transformer_config = read_pipeline_config(base, "transformer/config.json", **hub_kwargs)
    dtype = resolve_dtype(torch_dtype)
    if not isinstance(encoder, T5CompactEncoder):
        encoder = T5CompactEncoder.from_pretrained(encoder, torch_dtype=dtype if dtype != "auto" else None)
    check_width(encoder, transformer_config["joint_attention_dim"], f"{base}/transformer")
    slot = ENCODER_SLOTS[family]
    # diffusers renamed `torch_dtype` to `dtype` in 0.42 (the old name warns); pass the one it knows.
    dtype_kwarg = "dtype" if version.parse(diffusers.__version__).release >= (0, 42) else "torch_dtype"
    pipe = DiffusionPipeline.from_pretrained(base, **{dtype_kwarg: dtype, slot: encoder}, **pipeline_kwargs)
    cast_encoder(encoder, pipe.transformer.dtype)
    encoder.eval()
    if device is not None:
        pipe.to(device)
    return pipe
