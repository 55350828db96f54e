"""Load what training needs, and only that: the frozen transformer + scheduler, the T5 tokenizer, CLIP when
required, the teacher T5 when there is no cache, and the student (initialised as configured, fp32)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..distill import FamilyAdapter, PromptEncoder, make_adapter, vae_scale_factor_from_config
from ..modeling_t5_compact import T5CompactEncoder
from .config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)

TINY_MODELS = {"tiny:flux": ("flux", True), "tiny:flux-schnell": ("flux", False), "tiny:sd3": ("sd3", None)}
# FLUX.1's scheduler settings (resolution-dependent shift); the tiny FLUX models use them too.
FLUX_SCHEDULER = dict(
    use_dynamic_shifting=True,
    shift=3.0,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    base_shift=0.5,
    max_shift=1.15,
)
_SLOTS = {
    "flux": {"t5": ("text_encoder_2", "tokenizer_2"), "clip": [("text_encoder", "tokenizer")]},
    "sd3": {
        "t5": ("text_encoder_3", "tokenizer_3"),
        "clip": [("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")],
    },
}


@dataclass
class Components:
    """The frozen parts of a training run."""

    family: str
    adapter: FamilyAdapter | None
    prompt_encoder: PromptEncoder
    teacher_t5: nn.Module | None
    teacher_name: str
    vae_loader: object  # () -> AutoencoderKL, for validation images only


def pipeline_family(source: str) -> str:
    """'flux' or 'sd3' for a tiny name or a diffusers folder / hub id (reads model_index.json only)."""
    if source in TINY_MODELS:
        return TINY_MODELS[source][0]
    if source.startswith("tiny:"):
        raise ConfigError(f"unknown tiny model {source!r}; expected one of {sorted(TINY_MODELS)}")
    from .. import pipelines

    try:
        return pipelines.pipeline_family(source)
    except (OSError, ValueError) as err:
        raise ConfigError(f"pretrained_model {source!r}: not a usable FLUX / SD3 pipeline ({err})") from err


def teacher_name(config: TrainConfig, family: str) -> str:
    """The id of the teacher T5 a run uses (recorded in caches and `training_info.json`), without loading it."""
    return config.teacher or f"{config.pretrained_model}:{_SLOTS[family]['t5'][0]}"


def _tiny_components(source: str) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..tiny import tiny_flux_components, tiny_sd3_components

    family, guidance = TINY_MODELS[source]
    parts = tiny_flux_components(guidance_embeds=guidance) if family == "flux" else tiny_sd3_components()
    if family == "flux":
        parts["scheduler"] = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
    return parts


def load_components(
    config: TrainConfig,
    *,
    load_teacher: bool,
    need_clip: bool,
    device: torch.device,
    weight_dtype: torch.dtype,
    load_transformer: bool = True,
) -> Components:
    """Frozen transformer (in `weight_dtype`, on `device`; skipped if not `load_transformer`), scheduler,
    tokenizer, CLIP if `need_clip`, the teacher if `load_teacher`. The VAE only later, for validation images."""
    source = config.pretrained_model
    family = pipeline_family(source)
    t5_slot, tok_slot = _SLOTS[family]["t5"]
    if source in TINY_MODELS:
        parts = _tiny_components(source)
        transformer, scheduler, vae_config = parts["transformer"], parts["scheduler"], dict(parts["vae"].config)
        t5_tokenizer = parts[tok_slot]
        clips = [(parts[e], parts[t]) for e, t in _SLOTS[family]["clip"]] if need_clip else []
        teacher = parts[t5_slot] if load_teacher else None
        vae_loader = lambda: parts["vae"]  # noqa: E731
    else:
        from diffusers import (
            AutoencoderKL,
            FlowMatchEulerDiscreteScheduler,
            FluxTransformer2DModel,
            SD3Transformer2DModel,
        )
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

        kw = {"revision": config.revision} if config.revision else {}
        cls = FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel
        transformer = None
        if load_transformer:
            transformer = cls.from_pretrained(source, subfolder="transformer", torch_dtype=weight_dtype, **kw)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler", **kw)
        from ..pipelines import read_pipeline_config

        vae_config = read_pipeline_config(source, "vae/config.json")
        t5_tokenizer = AutoTokenizer.from_pretrained(source, subfolder=tok_slot, **kw)
        clips = []
        if need_clip:
            clip_cls = CLIPTextModel if family == "flux" else CLIPTextModelWithProjection
            for enc, tok in _SLOTS[family]["clip"]:
                model = clip_cls.from_pretrained(source, subfolder=enc, torch_dtype=weight_dtype, **kw)
                clips.append((model, AutoTokenizer.from_pretrained(source, subfolder=tok, **kw)))
        teacher = None
        if load_teacher:
            if config.teacher:
                teacher = T5EncoderModel.from_pretrained(config.teacher, torch_dtype=weight_dtype)
            else:
                teacher = T5EncoderModel.from_pretrained(source, subfolder=t5_slot, torch_dtype=weight_dtype, **kw)
        vae_loader = lambda: AutoencoderKL.from_pretrained(source, subfolder="vae", **kw)  # noqa: E731

    adapter = None
    if load_transformer:
        transformer.to(device=device)
        if transformer.dtype != weight_dtype:
            transformer.to(dtype=weight_dtype)
        if config.transformer_storage_dtype:
            storage = getattr(torch, config.transformer_storage_dtype)
            transformer.enable_layerwise_casting(storage_dtype=storage, compute_dtype=weight_dtype)
        if config.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.eval()
        adapter = make_adapter(family, transformer, scheduler, vae_scale_factor_from_config(vae_config))
    for model, _ in clips:
        model.to(device=device, dtype=weight_dtype).requires_grad_(False).eval()
    if teacher is not None:
        teacher.to(device=device, dtype=weight_dtype).requires_grad_(False).eval()
    encoder = PromptEncoder(
        family,
        t5_tokenizer,
        [t for _, t in clips],
        [m for m, _ in clips],
        max_sequence_length=config.max_sequence_length,
    )
    return Components(family, adapter, encoder, teacher, teacher_name(config, family), vae_loader)


def _looks_compact(source: str) -> bool:
    """True if `source` holds a compact encoder (projector) rather than a plain T5."""
    path = Path(source)
    if path.is_file():
        return True  # single .safetensors files are compact checkpoints
    try:
        if path.is_dir():
            cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
        else:
            from huggingface_hub import hf_hub_download

            cfg = json.loads(Path(hf_hub_download(source, "config.json")).read_text())
    except Exception as err:  # noqa: BLE001 - any failure to read the config is reported the same way
        raise ConfigError(f"init_from {source!r}: cannot read its config.json ({err})") from err
    keys = {"projection_out_dim", "project_out_dim", "out_dim"}
    return cfg.get("model_type") == "t5_compact" or bool(keys & set(cfg)) or "T5EncoderWithProjection" in str(cfg)


def build_student(config: TrainConfig, text_width: int) -> T5CompactEncoder:
    """The student in fp32, initialised as the config says (and really from `init_from`, unlike the reference)."""
    from ..configuration_t5_compact import compact_config
    from ..pipelines import check_width
    from ..tiny import tiny_compact_encoder

    kind = config.init_type
    if kind == "auto":
        if config.init_from is None:
            kind = "tiny" if config.pretrained_model in TINY_MODELS else "random"
        elif config.init_from == "tiny":
            kind = "tiny"
        else:
            kind = "compact" if _looks_compact(config.init_from) else "t5"
    if kind == "tiny":
        student = tiny_compact_encoder(out_dim=text_width, seed=config.seed)
    elif kind == "t5":
        if not config.init_from:
            raise ConfigError("init_type t5 needs init_from (e.g. google/flan-t5-base)")
        student = T5CompactEncoder.from_t5(config.init_from, projection_out_dim=text_width, seed=config.seed)
        logger.info("student: encoder weights from %s, new projector to width %d", config.init_from, text_width)
    elif kind == "compact":
        student = T5CompactEncoder.from_pretrained(config.init_from)
        check_width(student, text_width, config.pretrained_model)
    else:
        logger.warning("student: random %s init; the paper starts from google/flan-t5-base", config.student_size)
        torch.manual_seed(config.seed)
        student = T5CompactEncoder(compact_config(config.student_size, projection_out_dim=text_width))
    return student.float().train()
