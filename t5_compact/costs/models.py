"""The models of a training run at their real geometry, built without weights (meta or fake tensors).

Published configs are written here (REFERENCE.md section 7) so cost accounting never downloads anything. A local
diffusers folder is read for its `transformer/config.json` only. `tiny:*` models use `t5_compact.tiny`'s configs.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..training.config import ConfigError

FLUX_DEV = dict(
    attention_head_dim=128,
    num_attention_heads=24,
    num_layers=19,
    num_single_layers=38,
    in_channels=64,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    patch_size=1,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
FLUX_SCHNELL = {**FLUX_DEV, "guidance_embeds": False}
SD35_MEDIUM = dict(
    attention_head_dim=64,
    num_attention_heads=24,
    num_layers=24,
    caption_projection_dim=1536,
    dual_attention_layers=tuple(range(13)),
    in_channels=16,
    out_channels=16,
    joint_attention_dim=4096,
    pooled_projection_dim=2048,
    patch_size=2,
    pos_embed_max_size=384,
    qk_norm="rms_norm",
    sample_size=128,
)
SD3_MEDIUM = {**SD35_MEDIUM, "dual_attention_layers": (), "pos_embed_max_size": 192, "qk_norm": None}
# hub id -> (family, transformer config); a local folder is read instead.
KNOWN_TRANSFORMERS = {
    "black-forest-labs/FLUX.1-dev": ("flux", FLUX_DEV),
    "black-forest-labs/FLUX.1-schnell": ("flux", FLUX_SCHNELL),
    "stabilityai/stable-diffusion-3.5-medium": ("sd3", SD35_MEDIUM),
    "stabilityai/stable-diffusion-3-medium-diffusers": ("sd3", SD3_MEDIUM),
}
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128)
CLIP_L = dict(
    hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768
)
CLIP_G = dict(
    hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32, projection_dim=1280
)
KNOWN_STUDENTS = {
    "google/flan-t5-small": "small",
    "google/flan-t5-base": "base",
    "google/flan-t5-large": "large",
    "google/flan-t5-xl": "xl",
    "LifuWang/DistillT5-Small": "small",
    "LifuWang/DistillT5": "base",
    "LifuWang/DistillT5-Large": "large",
}
TINY_SOURCES = {"tiny:flux": ("flux", True), "tiny:flux-schnell": ("flux", False), "tiny:sd3": ("sd3", None)}


@dataclass
class RunModels:
    """The frozen transformer, the teacher T5, CLIP encoders (when the loop runs them) and the student."""

    family: str
    transformer: nn.Module
    teacher_t5: nn.Module
    student: nn.Module
    clips: list[nn.Module] = field(default_factory=list)
    name: str = ""

    @property
    def text_width(self) -> int:
        return self.transformer.config.joint_attention_dim


@dataclass
class RunSpec:
    """What to build: the family, the configs of each model, and the tiny flag (tiny configs come from `tiny.py`)."""

    family: str
    transformer: dict
    student: dict
    tiny: bool = False
    name: str = ""
    with_clip: bool = False
    notes: list[str] = field(default_factory=list)
    teacher: dict = field(default_factory=lambda: dict(T5_XXL))


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the {what} ({err})") from err


def transformer_spec(source: str) -> tuple[str, dict]:
    """(family, transformer config) for a known hub id, a local diffusers folder, or a `tiny:*` name."""
    if source in KNOWN_TRANSFORMERS:
        return KNOWN_TRANSFORMERS[source]
    if source in TINY_SOURCES:
        return TINY_SOURCES[source][0], {}
    folder = Path(source)
    if (folder / "transformer" / "config.json").is_file():
        config = _read_json(folder / "transformer" / "config.json", "transformer config")
        family = "flux" if config.get("_class_name") == "FluxTransformer2DModel" else "sd3"
        return family, {k: v for k, v in config.items() if not k.startswith("_")}
    known = ", ".join(sorted(KNOWN_TRANSFORMERS))
    raise ConfigError(
        f"pretrained_model {source!r}: geometry unknown without downloading; use one of {known}, "
        "a tiny:* model, or a local diffusers folder with transformer/config.json"
    )


def student_spec(init_from: str | None, student_size: str, width: int) -> tuple[dict, str]:
    """(student config kwargs, how it was chosen) without loading weights."""
    from ..configuration_t5_compact import T5_GEOMETRIES

    if init_from and Path(init_from, "config.json").is_file():
        config = _read_json(Path(init_from, "config.json"), "student config")
        keys = ("d_model", "d_ff", "d_kv", "num_heads", "num_layers", "vocab_size")
        return {k: config[k] for k in keys if k in config}, f"geometry read from {init_from}/config.json"
    size = KNOWN_STUDENTS.get(init_from or "", student_size)
    return dict(T5_GEOMETRIES[size]), f"flan-t5-{size} geometry" + (f" ({init_from})" if init_from else "")


def spec_from_config(config) -> RunSpec:
    """The `RunSpec` of a `TrainConfig` (no weights read; local folders read for their config.json only)."""
    family, transformer = transformer_spec(config.pretrained_model)
    tiny = config.pretrained_model in TINY_SOURCES
    with_clip = family == "sd3" or not config.zero_pooled
    if tiny:
        return RunSpec(family, {}, {}, True, config.pretrained_model, with_clip, ["tiny configs from t5_compact.tiny"])
    student, how = student_spec(config.init_from, config.student_size, transformer["joint_attention_dim"])
    return RunSpec(family, transformer, student, False, config.pretrained_model, with_clip, [f"student: {how}"])


def real_spec(name: str, student_size: str = "base") -> RunSpec:
    """The spec of a known hub model with a flan-t5 student of `student_size`."""
    from ..configuration_t5_compact import T5_GEOMETRIES

    family, transformer = KNOWN_TRANSFORMERS[name]
    return RunSpec(family, transformer, dict(T5_GEOMETRIES[student_size]), name=name, with_clip=family == "sd3")


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class _LogLevel(contextlib.ContextDecorator):
    def __init__(self, name: str, level: int):
        self.logger, self.level = logging.getLogger(name), level

    def __enter__(self):
        self.old = self.logger.level
        self.logger.setLevel(self.level)

    def __exit__(self, *exc):
        self.logger.setLevel(self.old)


def build_models(spec: RunSpec, weight_dtype: torch.dtype = torch.bfloat16) -> RunModels:
    """Build every model of `spec` under the current device / fake-tensor context (meta: `with torch.device("meta")`).

    The frozen models are built directly in `weight_dtype` (set as the default dtype: `.to()` cannot swap fake
    parameters); the student in float32, as training keeps it."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from ..configuration_t5_compact import T5CompactConfig
    from ..modeling_t5_compact import T5CompactEncoder

    if spec.tiny:
        return _tiny_models(spec, weight_dtype)
    cls = FluxTransformer2DModel if spec.family == "flux" else SD3Transformer2DModel
    width = spec.transformer["joint_attention_dim"]
    with _default_dtype(weight_dtype), _LogLevel("diffusers", logging.ERROR):
        transformer = cls(**spec.transformer)
        teacher = T5EncoderModel(
            T5Config(**spec.teacher, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
        )
        clips = []
        if spec.with_clip:
            names = [CLIP_L] if spec.family == "flux" else [CLIP_L, CLIP_G]
            for geometry in names:
                clip = CLIPTextConfig(**geometry, vocab_size=49408, max_position_embeddings=77, hidden_act="gelu")
                clips.append(CLIPTextModelWithProjection(clip))
    student_config = T5CompactConfig(**{"feed_forward_proj": "gated-gelu", **spec.student}, projection_out_dim=width)
    student = T5CompactEncoder(student_config)
    return _frozen(RunModels(spec.family, transformer, teacher, student, clips, spec.name))


def _tiny_models(spec: RunSpec, weight_dtype: torch.dtype) -> RunModels:
    from ..tiny import tiny_compact_encoder, tiny_flux_components, tiny_sd3_components

    family, guidance = TINY_SOURCES[spec.name]
    with _default_dtype(weight_dtype):
        parts = tiny_flux_components(guidance_embeds=guidance) if family == "flux" else tiny_sd3_components()
    clips = []
    if spec.with_clip:
        clips = [parts["text_encoder"]] + ([parts["text_encoder_2"]] if family == "sd3" else [])
    student = tiny_compact_encoder(out_dim=parts["transformer"].config.joint_attention_dim)
    key = "text_encoder_2" if family == "flux" else "text_encoder_3"
    return _frozen(RunModels(family, parts["transformer"], parts[key], student, clips, spec.name))


def _frozen(models: RunModels) -> RunModels:
    for module in [models.transformer, models.teacher_t5, *models.clips]:
        module.requires_grad_(False).eval()
    models.student.train()  # built in float32 (training's master copy)
    return models
