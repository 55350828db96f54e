"""Put a compact encoder into any stock diffusers pipeline with a T5 slot: slot discovery, width checks, families."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from .errors import CorruptCheckpointError, EncoderNotFoundError, WidthMismatchError
from .loading import cast_encoder, is_offline, looks_like_repo_id, resolve_dtype
from .modeling_t5_compact import T5CompactEncoder
from .pipeline_slots import T5Slot, check_kind, find_t5_slot, student_class, text_width


class _FamilySlots(Mapping):
    """family -> T5 slot of its pipelines, read from the family registry (`distill.families`) on access."""

    def _registry(self) -> dict:
        from .distill.families import FAMILIES

        return FAMILIES

    def __getitem__(self, family: str) -> str:
        return self._registry()[family].t5_slot

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry())

    def __len__(self) -> int:
        return len(self._registry())


# Training families' T5 slots: {"flux": "text_encoder_2", "sd3": "text_encoder_3", "chroma": ..., "ltx": ...}.
ENCODER_SLOTS: Mapping[str, str] = _FamilySlots()


def detect_family(pipeline_or_name: object) -> str:
    """The training family (`"flux"`, `"sd3"`, `"chroma"`, `"ltx"`, ... as registered in `distill.families`) of a
    pipeline object, class or class name. Only training needs a family; `load_pipeline` takes any T5 pipeline."""
    from .distill.families import family_of_class_name

    if isinstance(pipeline_or_name, str):
        name = pipeline_or_name
    elif isinstance(pipeline_or_name, type):
        name = pipeline_or_name.__name__
    else:
        name = type(pipeline_or_name).__name__
    family = family_of_class_name(name)
    if family is None:
        raise ValueError(
            f"{name}: not a FLUX, Stable Diffusion 3, Chroma or LTX-Video pipeline; distillation supports only those"
        )
    return family


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


def _pipeline_index(base: str | os.PathLike, **hub_kwargs) -> dict:
    index = read_pipeline_config(base, **hub_kwargs)
    if "_class_name" not in index:
        raise CorruptCheckpointError(f"{base}/model_index.json: no '_class_name'; is this a diffusers pipeline?")
    return index


def pipeline_family(base: str | os.PathLike, **hub_kwargs) -> str:
    """The training family (`detect_family`) of a pipeline folder or hub repo, from its `model_index.json`."""
    return detect_family(_pipeline_index(base, **hub_kwargs)["_class_name"])


def pipeline_t5_slot(base: str | os.PathLike, **hub_kwargs) -> T5Slot:
    """The T5 slot of a pipeline folder or hub repo (class from `model_index.json`), without loading weights."""
    index = _pipeline_index(base, **hub_kwargs)
    return find_t5_slot(index["_class_name"], index)


def check_width(
    encoder: torch.nn.Module, expected: int, where: str = "the transformer", key: str = "joint_attention_dim"
) -> None:
    """Raise `WidthMismatchError` unless the encoder's output width equals the transformer's text width `expected`
    (read from its config `key`)."""
    width = encoder.config.projection_out_dim if isinstance(encoder, T5CompactEncoder) else encoder.config.d_model
    if width != expected:
        raise WidthMismatchError(
            f"{getattr(encoder, 'name_or_path', '') or type(encoder).__name__}: the encoder outputs width {width} "
            f"but {where} expects {key}={expected}; use a student trained for this model"
        )


def load_pipeline(
    base: str | os.PathLike,
    encoder: str | os.PathLike | T5CompactEncoder,
    torch_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    **pipeline_kwargs,
):
    """Load any diffusers pipeline with a T5 slot (folder or hub id) with `encoder` in that slot.

    The pipeline class comes from `model_index.json`, the slot from the class's annotations (`text_encoder_2` for
    FLUX, `text_encoder_3` for SD3 / HiDream, `text_encoder` for Chroma, PixArt, LTX, CogVideoX, ...); UMT5 slots
    are refused. The encoder's width is checked against the denoiser config (`joint_attention_dim`,
    `caption_channels`, `text_embed_dim`, ...) before the denoiser loads, and the encoder is cast to the pipeline's
    dtype (a fp32 encoder beside a bf16 transformer otherwise fails with a matmul dtype error). `torch_dtype`
    (alias `dtype`) is the pipeline's dtype; None/"auto" keeps diffusers' default. Other keyword arguments go to
    `DiffusionPipeline.from_pretrained`.
    """
    from diffusers import DiffusionPipeline

    if "dtype" in pipeline_kwargs:
        if torch_dtype is not None:
            raise ValueError("pass one of torch_dtype and dtype, not both")
        torch_dtype = pipeline_kwargs.pop("dtype")
    hub_kwargs = {k: pipeline_kwargs[k] for k in ("revision", "token", "cache_dir") if k in pipeline_kwargs}
    index = _pipeline_index(base, **hub_kwargs)
    slot = find_t5_slot(index["_class_name"], index)
    check_kind(slot)
    if slot.slot in pipeline_kwargs:
        raise TypeError(f"pass the compact encoder as `encoder`, not as {slot.slot}=")
    if slot.denoiser is None or slot.denoiser not in index:
        raise ValueError(f"{base}: {slot.pipeline} has no transformer or unet to check the encoder's width against")
    where = f"{base} ({slot.denoiser}/config.json)"
    expected, key = text_width(read_pipeline_config(base, f"{slot.denoiser}/config.json", **hub_kwargs), where)
    dtype = resolve_dtype(torch_dtype)
    dtype = None if dtype == "auto" else dtype
    student_cls = student_class(slot.kind)  # T5CompactEncoder for T5 slots (a UMT5 student would plug in here)
    if not isinstance(encoder, torch.nn.Module):
        encoder = student_cls.from_pretrained(encoder, torch_dtype=dtype)
    elif not isinstance(encoder, student_cls):
        raise TypeError(f"{slot.pipeline}.{slot.slot} takes a {student_cls.__name__}, got {type(encoder).__name__}")
    check_width(encoder, expected, where, key)
    if dtype is not None:
        pipeline_kwargs["dtype"] = dtype  # diffusers >= 0.42 (our lower bound) names it `dtype`
    pipe = DiffusionPipeline.from_pretrained(base, **{slot.slot: encoder}, **pipeline_kwargs)
    cast_encoder(encoder, getattr(pipe, slot.denoiser).dtype)
    encoder.eval()
    if device is not None:
        pipe.to(device)
    return pipe
