"""Load what training needs, and only that: the frozen transformer + scheduler, the T5 tokenizer, CLIP when
required, the teacher T5 when there is no cache, and the student (initialised as configured, fp32)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..distill import FamilyAdapter, PromptEncoder, family_class, make_adapter
from ..modeling_t5_compact import T5CompactEncoder
from .config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)

TINY_MODELS = {
    "tiny:flux": ("flux", True),
    "tiny:flux-schnell": ("flux", False),
    "tiny:sd3": ("sd3", None),
    "tiny:chroma": ("chroma", None),
    "tiny:ltx": ("ltx", None),
}
# FLUX.1's scheduler settings (resolution-dependent shift); the tiny FLUX models use them too.
FLUX_SCHEDULER = dict(
    use_dynamic_shifting=True,
    shift=3.0,
    base_image_seq_len=256,
    max_image_seq_len=4096,
    base_shift=0.5,
    max_shift=1.15,
)
# The tiny LTX model's scheduler: LTX-Video's own shift settings (sequence length 1024..4096 -> shift 0.95..2.05,
# terminal sigma 0.1), as in its published scheduler_config.json (not checked against the file here: no hub).
LTX_SCHEDULER = dict(
    use_dynamic_shifting=True,
    shift=1.0,
    base_image_seq_len=1024,
    max_image_seq_len=4096,
    base_shift=0.95,
    max_shift=2.05,
    shift_terminal=0.1,
)
_TINY_SCHEDULERS = {"flux": FLUX_SCHEDULER, "chroma": FLUX_SCHEDULER, "ltx": LTX_SCHEDULER}


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
    """The family ('flux', 'sd3', 'chroma', 'ltx') of a tiny name or a diffusers folder / hub id (reads
    model_index.json only)."""
    if source in TINY_MODELS:
        return TINY_MODELS[source][0]
    if source.startswith("tiny:"):
        raise ConfigError(f"unknown tiny model {source!r}; expected one of {sorted(TINY_MODELS)}")
    from .. import pipelines

    try:
        return pipelines.pipeline_family(source)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"pretrained_model {source!r}: not a usable FLUX / SD3 / Chroma / LTX pipeline ({err})"
        ) from err


def teacher_name(config: TrainConfig, family: str) -> str:
    """The id of the teacher T5 a run uses (recorded in caches and `training_info.json`), without loading it."""
    return config.teacher or f"{config.pretrained_model}:{family_class(family).t5_slot}"


def _tiny_components(source: str) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from ..tiny import tiny_flux_components, tiny_sd3_components
    from ..tiny_pipelines import tiny_chroma, tiny_ltx

    family, guidance = TINY_MODELS[source]
    if family == "flux":
        parts = tiny_flux_components(guidance_embeds=guidance)
    elif family == "sd3":
        parts = tiny_sd3_components()
    else:
        parts = dict((tiny_chroma if family == "chroma" else tiny_ltx)().components)
    if family in _TINY_SCHEDULERS:
        parts["scheduler"] = FlowMatchEulerDiscreteScheduler(**_TINY_SCHEDULERS[family])
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
    spec = family_class(family)
    t5_slot, tok_slot = spec.t5_slot, spec.t5_tokenizer
    if source in TINY_MODELS:
        parts = _tiny_components(source)
        transformer, scheduler, vae_config = parts["transformer"], parts["scheduler"], dict(parts["vae"].config)
        t5_tokenizer = parts[tok_slot]
        clips = [(parts[e], parts[t]) for e, t in spec.clip_slots] if need_clip else []
        teacher = parts[t5_slot] if load_teacher else None
        vae_loader = lambda: parts["vae"]  # noqa: E731
    else:
        import diffusers
        import transformers
        from diffusers import FlowMatchEulerDiscreteScheduler
        from transformers import AutoTokenizer, T5EncoderModel

        from ..pipelines import read_pipeline_config

        kw = {"revision": config.revision} if config.revision else {}
        cls = getattr(diffusers, read_pipeline_config(source, "transformer/config.json")["_class_name"])
        vae_cls = getattr(diffusers, read_pipeline_config(source, "vae/config.json")["_class_name"])
        transformer = None
        if load_transformer:
            transformer = cls.from_pretrained(source, subfolder="transformer", torch_dtype=weight_dtype, **kw)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler", **kw)
        vae_config = read_pipeline_config(source, "vae/config.json")
        t5_tokenizer = AutoTokenizer.from_pretrained(source, subfolder=tok_slot, **kw)
        clips = []
        if need_clip:
            clip_cls = getattr(transformers, spec.clip_class)
            for enc, tok in spec.clip_slots:
                model = clip_cls.from_pretrained(source, subfolder=enc, torch_dtype=weight_dtype, **kw)
                clips.append((model, AutoTokenizer.from_pretrained(source, subfolder=tok, **kw)))
        teacher = None
        if load_teacher:
            if config.teacher:
                teacher = T5EncoderModel.from_pretrained(config.teacher, torch_dtype=weight_dtype)
            else:
                teacher = T5EncoderModel.from_pretrained(source, subfolder=t5_slot, torch_dtype=weight_dtype, **kw)
        vae_loader = lambda: vae_cls.from_pretrained(source, subfolder="vae", **kw)  # noqa: E731

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
        options = spec.vae_options(vae_config) | spec.config_options(config)
        adapter = make_adapter(family, transformer, scheduler, **options)
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
