"""Configuration of the compact text encoder: a T5 encoder stack followed by an MLP projector."""

from __future__ import annotations

from .compat import require_transformers_5

require_transformers_5("T5CompactConfig (t5_compact's model classes)")

from huggingface_hub.dataclasses import strict  # noqa: E402 - after the one-line version check
from transformers import T5Config  # noqa: E402

PROJECTION_ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu")


@strict
class T5CompactConfig(T5Config):
    r"""Configuration for [`T5CompactEncoder`].

    All T5 fields keep their meaning (`d_model`, `d_ff`, `d_kv`, `num_heads`, `num_layers`, `feed_forward_proj`,
    `vocab_size`, relative attention buckets...). The projector maps the encoder's last hidden state
    (width `d_model`) to the width the diffusion transformer expects (4096 for FLUX.1 and SD3):
    `Linear(d_model, projection_hidden_dim) -> act -> Dropout -> Linear(projection_hidden_dim, projection_out_dim)`.

    projection_hidden_dim (`int`, defaults to 4096): width of the projector's hidden layer.
    projection_out_dim (`int`, defaults to 4096): output width; must equal the transformer's `joint_attention_dim`.
    projection_act (`str`, defaults to `"relu"`): activation between the two linear layers.
    projection_dropout (`float`, defaults to 0.1): dropout after the activation (off in `eval()`).
    projection_bias (`bool`, defaults to `False`): whether the projector's linear layers have biases.
    """

    model_type = "t5_compact"

    vocab_size: int = 32128
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 12
    num_heads: int = 12
    feed_forward_proj: str = "gated-gelu"
    is_encoder_decoder: bool = False
    use_cache: bool = False
    projection_hidden_dim: int = 4096
    projection_out_dim: int = 4096
    projection_act: str = "relu"
    projection_dropout: float | int = 0.1
    projection_bias: bool = False

    @property
    def projection_in_dim(self) -> int:
        """The projector's input width, always the encoder's `d_model`."""
        return self.d_model

    def validate_architecture(self) -> None:
        """Raise a `ValueError` for geometry that cannot build a model."""
        super().validate_architecture()
        for name in ("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"T5CompactConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("projection_hidden_dim", "projection_out_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"T5CompactConfig.{name} must be positive, got {getattr(self, name)}")
        if self.projection_act not in PROJECTION_ACTIVATIONS:
            raise ValueError(
                f"T5CompactConfig.projection_act must be one of {PROJECTION_ACTIVATIONS}, got {self.projection_act!r}"
            )
        if not 0.0 <= self.projection_dropout < 1.0:
            raise ValueError(f"T5CompactConfig.projection_dropout must be in [0, 1), got {self.projection_dropout}")


# Student geometries of the paper (flan-t5 encoders) and the T5-XXL teacher (t5-v1_1-xxl encoder).
T5_GEOMETRIES: dict[str, dict[str, int | str]] = {
    "small": dict(d_model=512, d_ff=1024, d_kv=64, num_heads=6, num_layers=8),
    "base": dict(d_model=768, d_ff=2048, d_kv=64, num_heads=12, num_layers=12),
    "large": dict(d_model=1024, d_ff=2816, d_kv=64, num_heads=16, num_layers=24),
    "xl": dict(d_model=2048, d_ff=5120, d_kv=64, num_heads=32, num_layers=24),
    "xxl": dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24),
}
STUDENT_SIZES = ("small", "base", "large", "xl")


def compact_config(size: str = "base", **overrides) -> T5CompactConfig:
    """Config of a paper-sized student (`small`, `base`, `large`, `xl`), gated-GELU flan-t5 geometry."""
    if size not in STUDENT_SIZES:
        raise ValueError(f"unknown student size {size!r}; expected one of {STUDENT_SIZES}")
    return T5CompactConfig(**{**T5_GEOMETRIES[size], "feed_forward_proj": "gated-gelu", **overrides})
