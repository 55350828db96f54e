"""Where a diffusers pipeline takes its T5 encoder, and which transformer config key holds the width it expects.

The slot is found from the pipeline class's `__init__` annotations (any parameter typed `T5EncoderModel`), not
from a hand list of names, so every FLUX / SD3 / Chroma / PixArt / LTX / CogVideoX / ... variant is covered. The
width key is per denoiser class (`joint_attention_dim`, `caption_channels`, `text_embed_dim`, ...) and is read
from `transformer/config.json` (or `unet/config.json`) before any weights load.

Encoder kinds: `"t5"` slots take a `T5CompactEncoder`; `"umt5"` slots (Wan, AuraFlow, SkyReels) are refused until
a UMT5 student exists — adding one means adding its class to `STUDENT_CLASSES`, nothing else here.
"""

from __future__ import annotations

import inspect
import re
import typing
from dataclasses import dataclass

from .errors import WidthMismatchError

# transformers class named in a slot's annotation -> encoder kind.
ENCODER_KINDS = {"T5EncoderModel": "t5", "UMT5EncoderModel": "umt5"}
# Kinds a compact student exists for, as "module:Class" (a UMT5 student would add "umt5" here).
STUDENT_CLASSES = {"t5": "t5_compact.modeling_t5_compact:T5CompactEncoder"}

# Denoiser class -> config key of the T5 text width; a tuple (key, index) when the key holds a list.
TEXT_WIDTH_KEYS: dict[str, str | tuple[str, int]] = {
    "FluxTransformer2DModel": "joint_attention_dim",
    "SD3Transformer2DModel": "joint_attention_dim",
    "ChromaTransformer2DModel": "joint_attention_dim",
    "BriaTransformer2DModel": "joint_attention_dim",
    "PixArtTransformer2DModel": "caption_channels",
    "LTXVideoTransformer3DModel": "caption_channels",
    "AllegroTransformer3DModel": "caption_channels",
    "LatteTransformer3DModel": "caption_channels",
    "CogVideoXTransformer3DModel": "text_embed_dim",
    "CogView3PlusTransformer2DModel": "text_embed_dim",
    "MochiTransformer3DModel": "text_embed_dim",
    "CosmosTransformer3DModel": "text_embed_dim",
    "GlmImageTransformer2DModel": "text_embed_dim",
    "HiDreamImageTransformer2DModel": ("caption_channels", 0),  # [T5 width, Llama width]
    "HunyuanDiT2DModel": "cross_attention_dim_t5",
    "HunyuanImageTransformer2DModel": "text_embed_2_dim",
    "HunyuanVideo15Transformer3DModel": "text_embed_2_dim",
    "UNet2DConditionModel": "encoder_hid_dim",  # DeepFloyd IF
    "Kandinsky3UNet": "encoder_hid_dim",
}
DENOISERS = ("transformer", "unet")
# Pipelines (class-name prefixes) whose `encode_prompt` passes the tokenizer's attention mask to the T5 encoder,
# read from diffusers 0.42's sources; the others (FLUX, SD3, LTX, CogVideoX, ...) encode the pad tokens too.
MASKED_T5_PREFIXES = (
    "Chroma", "PixArt", "HiDream", "Mochi", "Cosmos", "Allegro", "Latte", "Kandinsky3", "IF", "LTXConditionPipeline"
)  # fmt: skip


@dataclass(frozen=True)
class T5Slot:
    """A pipeline's T5 slot: component name, encoder kind ("t5" / "umt5") and the denoiser component's name."""

    pipeline: str
    slot: str
    kind: str
    denoiser: str | None

    @property
    def tokenizer(self) -> str:
        """The tokenizer component paired with the slot (`text_encoder_2` -> `tokenizer_2`)."""
        return self.slot.replace("text_encoder", "tokenizer")


def default_max_sequence_length(pipeline: object) -> int | None:
    """The `max_sequence_length` default of the pipeline's `__call__` (FLUX 512, SD3 256, PixArt-Sigma 300...)."""
    param = inspect.signature(pipeline_class(pipeline).__call__).parameters.get("max_sequence_length")
    default = None if param is None else param.default
    return default if isinstance(default, int) else None


def _annotation_names(annotation: object) -> set[str]:
    """Class names an annotation mentions (`T5EncoderModel | None`, a string under `from __future__`, ...)."""
    if isinstance(annotation, str):
        return set(re.findall(r"[A-Za-z_]\w*", annotation))
    if isinstance(annotation, type):
        return {annotation.__name__}
    return set().union(*(_annotation_names(arg) for arg in typing.get_args(annotation)))


def pipeline_class(name_or_class: object) -> type:
    """The diffusers pipeline class for a class, an instance or a class name from `model_index.json`."""
    import diffusers

    if isinstance(name_or_class, type):
        return name_or_class
    if not isinstance(name_or_class, str):
        return type(name_or_class)
    cls = getattr(diffusers, name_or_class, None)
    if not isinstance(cls, type):
        raise ValueError(f"{name_or_class}: not a pipeline class of the installed diffusers {diffusers.__version__}")
    return cls


def find_t5_slot(pipeline: object, index: dict | None = None) -> T5Slot:
    """The T5 slot of a pipeline (class, instance or class name), from its `__init__` annotations.

    `index` (a `model_index.json`) decides between kinds when the annotation allows both T5 and UMT5 and names the
    denoiser component. Raises `ValueError` (one line) when the class declares no T5 encoder."""
    cls = pipeline_class(pipeline)
    params = inspect.signature(cls.__init__).parameters
    found = []
    for name, param in params.items():
        kinds = {ENCODER_KINDS[n] for n in _annotation_names(param.annotation) if n in ENCODER_KINDS}
        if kinds:
            found.append((name, kinds))
    if not found:
        raise ValueError(f"{cls.__name__}: declares no T5EncoderModel component; t5-compact replaces T5 encoders")
    slot, kinds = found[0]
    stored = (index or {}).get(slot)
    if isinstance(stored, list) and len(stored) == 2 and stored[1] in ENCODER_KINDS:
        kind = ENCODER_KINDS[stored[1]]
    else:
        kind = "umt5" if "umt5" in kinds else "t5"
    denoiser = next((d for d in DENOISERS if d in params), None)
    return T5Slot(cls.__name__, slot, kind, denoiser)


def passes_t5_mask(pipeline: object) -> bool:
    """Whether the pipeline encodes prompts with the T5 attention mask (`MASKED_T5_PREFIXES`)."""
    return pipeline_class(pipeline).__name__.startswith(MASKED_T5_PREFIXES)


def student_class(kind: str) -> type:
    """The compact encoder class for an encoder kind (`STUDENT_CLASSES`), imported on demand."""
    import importlib

    module, name = STUDENT_CLASSES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def check_kind(slot: T5Slot) -> None:
    """Refuse a slot no compact student exists for (UMT5 today), in one line."""
    if slot.kind not in STUDENT_CLASSES:
        raise ValueError(
            f"{slot.pipeline}: its {slot.slot} is a {slot.kind.upper()} encoder; t5-compact has T5 students only "
            f"(a {slot.kind.upper()} student is needed)"
        )


def text_width(denoiser_config: dict, where: str) -> tuple[int, str]:
    """`(width, key)`: the T5 width a denoiser config expects, and the key it came from."""
    name = denoiser_config.get("_class_name", "?")
    spec = TEXT_WIDTH_KEYS.get(name)
    if spec is None:
        raise WidthMismatchError(f"{where}: unknown denoiser class {name}; cannot tell which width it expects")
    key, position = (spec, None) if isinstance(spec, str) else spec
    value = denoiser_config.get(key)
    if position is not None and isinstance(value, list | tuple):
        value, key = value[position], f"{key}[{position}]"
    if not isinstance(value, int):
        raise WidthMismatchError(f"{where}: {name} config has no integer {key} (got {value!r})")
    return value, key
