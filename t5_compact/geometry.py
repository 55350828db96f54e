"""Read a compact encoder's geometry off tensor names and shapes; no model is built and no tensor is loaded.

Pure functions over `{key: shape}` maps, shared by the diffusers-side loader and the ComfyUI node pack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from .errors import CheckpointKeysError, CorruptCheckpointError, NotACompactEncoderError

Shapes = Mapping[str, tuple[int, ...]]

_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
# CLIP keys: `text_model.*` (ComfyUI / transformers 4 files) or, as transformers 5 saves `CLIPTextModel`,
# `embeddings.token_embedding.*` / `embeddings.position_embedding.*` at the top level.
_CLIP_MARKERS = (
    "text_model.",
    "text_projection.",
    "logit_scale",
    "vision_model.",
    "token_embedding.",
    "position_embedding.",
)
_TIED = "encoder.embed_tokens.weight"

# Key of the safetensors `__metadata__` entry holding the encoder's config as JSON (single-file checkpoints written
# by `t5-compact convert --format comfyui`); lets activation, epsilon, etc. round-trip where shapes cannot tell.
METADATA_CONFIG_KEY = "t5_compact_config"


def canonical_key(key: str) -> str:
    """Map a key of any supported layout to this package's names (those of `T5CompactEncoder`)."""
    if key.startswith("encoder.shared.") or key.startswith("encoder.encoder."):
        return key[len("encoder.") :]  # the paper's wrapper: `encoder` is a whole T5EncoderModel
    return key


def canonical_shapes(shapes: Shapes, source: str) -> dict[str, tuple[int, ...]]:
    """Rename keys to our layout, drop the tied embedding copy, and reject files of another model."""
    keys = list(shapes)
    check_is_compact(keys, shapes, source)
    out = {canonical_key(k): tuple(v) for k, v in shapes.items()}
    out.pop(_TIED, None)
    return out


def check_is_compact(keys: Iterable[str], shapes: Shapes, source: str) -> None:
    """Raise `NotACompactEncoderError` when the keys describe a CLIP model or a T5 encoder with no projector."""
    keys = list(keys)
    if not keys:
        raise NotACompactEncoderError(f"{source}: the checkpoint holds no tensors")
    if any(k.startswith(m) or f".{m}" in k for k in keys for m in _CLIP_MARKERS):
        raise NotACompactEncoderError(
            f"{source}: this is a CLIP text model (keys like 'text_model.*' / 'embeddings.token_embedding.*'), not a "
            "compact T5 encoder; load it in the CLIP slot (text_encoder / clip_l / clip_g) instead"
        )
    canon = [canonical_key(k) for k in keys]
    if not any(k == "shared.weight" or k.startswith("encoder.block.") for k in canon):
        raise NotACompactEncoderError(
            f"{source}: no T5 encoder tensors found (expected 'shared.weight' and 'encoder.block.*'); "
            f"first keys: {sorted(keys)[:5]}"
        )
    if any(k.startswith("decoder.") for k in canon):
        raise NotACompactEncoderError(
            f"{source}: this is a full T5 encoder-decoder without a projector; start a student from it with "
            "`T5CompactEncoder.from_t5(...)` instead"
        )
    if not any(k.startswith("final_projection.") for k in canon):
        width = shapes.get("shared.weight", shapes.get("encoder.shared.weight", (0, 0)))[-1]
        what = "a T5-XXL encoder" if width == 4096 else f"a plain T5 encoder (d_model {width})"
        raise NotACompactEncoderError(
            f"{source}: this is {what} with no projector ('final_projection.*' keys are missing), not a compact "
            "encoder; load it with the stock T5 loader, or start a student from it with `T5CompactEncoder.from_t5`"
        )


def infer_geometry(shapes: Shapes, source: str) -> dict[str, object]:
    """Config fields of the model described by canonical `shapes` (see `canonical_shapes`)."""

    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointKeysError(f"{source}: missing tensor {key!r}, needed to infer the encoder's geometry")
        return shapes[key]

    vocab_size, d_model = need("shared.weight")
    blocks = {int(m.group(1)) for k in shapes if (m := _BLOCK.match(k))}
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointKeysError(f"{source}: encoder blocks are missing or not numbered 0..N-1: {sorted(blocks)}")
    buckets, num_heads = need("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    inner = need("encoder.block.0.layer.0.SelfAttention.q.weight")[0]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    d_ff = need(f"encoder.block.0.layer.1.DenseReluDense.{'wi_0' if gated else 'wi'}.weight")[0]
    hidden, in_dim = need("final_projection.0.weight")
    out_dim, hidden2 = need("final_projection.3.weight")
    if in_dim != d_model or hidden2 != hidden:
        raise CheckpointKeysError(
            f"{source}: projector shapes do not chain: final_projection.0 is {hidden}x{in_dim}, "
            f"final_projection.3 is {out_dim}x{hidden2}, encoder width is {d_model}"
        )
    return dict(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=inner // num_heads,
        d_ff=d_ff,
        num_layers=len(blocks),
        num_heads=num_heads,
        relative_attention_num_buckets=buckets,
        feed_forward_proj="gated-gelu" if gated else "relu",
        projection_hidden_dim=hidden,
        projection_out_dim=out_dim,
        projection_bias="final_projection.0.bias" in shapes,
    )


def paper_config_to_ours(config: Mapping[str, object]) -> dict[str, object]:
    """Translate the paper's `config.json` (model_type "t5" + `project_in_dim`/`project_out_dim`) to our fields."""
    fields = (
        "vocab_size d_model d_kv d_ff num_layers num_heads relative_attention_num_buckets "
        "relative_attention_max_distance dropout_rate layer_norm_epsilon initializer_factor feed_forward_proj"
    ).split()
    ours = {k: config[k] for k in fields if k in config}
    ours["projection_act"] = "relu"
    return ours


def is_paper_config(config: Mapping[str, object]) -> bool:
    """True for the paper's published `config.json` layout."""
    archs = config.get("architectures") or []
    return config.get("model_type") == "t5" and (
        "project_in_dim" in config or "project_out_dim" in config or "T5EncoderWithProjection" in archs
    )


def config_from_metadata(metadata: Mapping[str, str] | None, source: str) -> dict[str, object] | None:
    """The config dict stored in a safetensors file's `__metadata__` (see `METADATA_CONFIG_KEY`), or None."""
    if not metadata or METADATA_CONFIG_KEY not in metadata:
        return None
    try:
        config = json.loads(metadata[METADATA_CONFIG_KEY])
    except (TypeError, json.JSONDecodeError) as err:
        raise CorruptCheckpointError(
            f"{source}: the {METADATA_CONFIG_KEY!r} metadata entry is not JSON ({err})"
        ) from err
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f"{source}: the {METADATA_CONFIG_KEY!r} metadata entry is not a JSON object")
    return config


# Config fields the tensors cannot tell, at the values `T5CompactConfig` defaults to (T5's own defaults).
FIELD_DEFAULTS: dict[str, object] = dict(
    relative_attention_max_distance=128,
    layer_norm_epsilon=1e-6,
    dropout_rate=0.1,
    projection_act="relu",
    projection_dropout=0.1,
)


def expected_shapes(fields: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of a `T5CompactEncoder` with these config fields (no model is built).

    `fields` is a `T5CompactConfig` as a dict or the geometry of `infer_geometry`; the tied `encoder.embed_tokens`
    copy is not listed (see `canonical_shapes`).
    """
    d_model, d_ff, d_kv, heads = (int(fields[k]) for k in ("d_model", "d_ff", "d_kv", "num_heads"))
    inner, hidden, out = d_kv * heads, int(fields["projection_hidden_dim"]), int(fields["projection_out_dim"])
    gated = str(fields.get("feed_forward_proj", "gated-gelu")).startswith("gated-")
    shapes = {"shared.weight": (int(fields["vocab_size"]), d_model)}
    for i in range(int(fields["num_layers"])):
        attn, ff = f"encoder.block.{i}.layer.0.", f"encoder.block.{i}.layer.1."
        for name in "qkv":
            shapes[f"{attn}SelfAttention.{name}.weight"] = (inner, d_model)
        shapes[f"{attn}SelfAttention.o.weight"] = (d_model, inner)
        if i == 0:
            buckets = int(fields.get("relative_attention_num_buckets", 32))
            shapes[f"{attn}SelfAttention.relative_attention_bias.weight"] = (buckets, heads)
        shapes[f"{attn}layer_norm.weight"] = (d_model,)
        for name in ("wi_0", "wi_1") if gated else ("wi",):
            shapes[f"{ff}DenseReluDense.{name}.weight"] = (d_ff, d_model)
        shapes[f"{ff}DenseReluDense.wo.weight"] = (d_model, d_ff)
        shapes[f"{ff}layer_norm.weight"] = (d_model,)
    shapes["encoder.final_layer_norm.weight"] = (d_model,)
    shapes["final_projection.0.weight"] = (hidden, d_model)
    shapes["final_projection.3.weight"] = (out, hidden)
    if fields.get("projection_bias"):
        shapes["final_projection.0.bias"] = (hidden,)
        shapes["final_projection.3.bias"] = (out,)
    return shapes
