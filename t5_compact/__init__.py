"""t5-compact: distilled T5 text encoders as drop-in replacements for T5-XXL in FLUX.1 and SD3."""

from .compat import has_transformers_5, require_transformers_5
from .errors import (
    CheckpointError,
    CheckpointKeysError,
    CorruptCheckpointError,
    EncoderNotFoundError,
    NotACompactEncoderError,
    WidthMismatchError,
)

_NEEDS_TRANSFORMERS_5 = ("STUDENT_SIZES", "T5CompactConfig", "T5CompactEncoder", "compact_config", "load_pipeline")

if has_transformers_5():
    from transformers import AutoConfig, AutoModel

    from .configuration_t5_compact import STUDENT_SIZES, T5CompactConfig, compact_config
    from .modeling_t5_compact import T5CompactEncoder
    from .pipelines import load_pipeline

    AutoConfig.register(T5CompactConfig.model_type, T5CompactConfig, exist_ok=True)
    AutoModel.register(T5CompactConfig, T5CompactEncoder, exist_ok=True)
else:  # transformers 4 (e.g. a ComfyUI environment): the header-only modules and the node pack still import

    def __getattr__(name: str) -> object:
        if name in _NEEDS_TRANSFORMERS_5:
            require_transformers_5(f"t5_compact.{name}")
        raise AttributeError(f"module 't5_compact' has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = [
    "STUDENT_SIZES",
    "CheckpointError",
    "CheckpointKeysError",
    "CorruptCheckpointError",
    "EncoderNotFoundError",
    "NotACompactEncoderError",
    "T5CompactConfig",
    "T5CompactEncoder",
    "WidthMismatchError",
    "compact_config",
    "load_pipeline",
]
