"""Pure logic of the node pack: key maps, ComfyUI T5 configs, dtype/device options, node specs and metadata.

No comfy import here, so everything in this file is checked by the normal test suite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .core import errors

# Width of the T5 embeddings FLUX.1 and SD3 expect (their transformers' `joint_attention_dim`).
T5XXL_WIDTH = 4096

# Key renames from the files we accept to ComfyUI's T5 names (= this package's names, see `T5CompactEncoder`).
# The paper's release wraps a whole `T5EncoderModel` as `encoder`; our converter and ComfyUI-style files do not.
KEY_PREFIX_MAP: dict[str, str] = {
    "encoder.shared.": "shared.",
    "encoder.encoder.": "encoder.",
}
# Tensors we drop: the tied copy of `shared.weight` that some exports carry.
DROP_KEYS: frozenset[str] = frozenset({"encoder.embed_tokens.weight"})

# T5 `feed_forward_proj` -> ComfyUI's `dense_act_fn` and `is_gated_act` (transformers' gated-gelu is tanh GELU).
FEED_FORWARD: dict[str, tuple[str, bool]] = {
    "gated-gelu": ("gelu_pytorch_tanh", True),
    "relu": ("relu", False),
    "gated-relu": ("relu", True),
}
# ComfyUI's T5 fixes these; a checkpoint that needs other values cannot run on it.
COMFY_T5_FIXED = {"relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}
COMFY_T5_EPS = 1e-6
PROJECTION_ACTS = ("relu", "gelu", "gelu_new", "silu")

DTYPE_OPTIONS = ["default", "fp32", "fp16", "bf16"]
DEVICE_OPTIONS = ["default", "cpu"]  # as the stock CLIPLoader / DualCLIPLoader
SAFETENSORS_DTYPES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "float32": "fp32", "float16": "fp16"}
SAFETENSORS_DTYPES |= {"bfloat16": "bf16", "torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}
# Every stock `CLIPLoader` type that runs T5-XXL alone in ComfyUI v0.33.0 (`comfy.sd.load_text_encoder_state_dicts`,
# T5_XXL branch). Not here: wan (a UMT5-XXL, vocab 256k), cosmos (the old T5 v1.0 11B, T5_XXL_OLD).
T5_ONLY_TYPES = ["sd3", "chroma", "pixart", "ltxv", "mochi", "cogvideox", "hidream"]
# Compositions (see `model.py`) and the model family each one feeds, for messages.
FAMILY_NAMES = {"flux": "FLUX.1", "sd3": "SD3", "sd3_t5_only": "SD3", "pixart": "PixArt / Chroma"}
FAMILY_NAMES |= {"ltxv": "LTX-Video", "mochi": "Mochi", "cogvideox": "CogVideoX", "hidream": "HiDream"}
T5_ONLY_FAMILIES = {"sd3": "sd3_t5_only", "chroma": "pixart", "pixart": "pixart"}
T5_ONLY_FAMILIES |= {t: t for t in ("ltxv", "mochi", "cogvideox", "hidream")}

CATEGORY = "model/loaders/t5-compact"


def remap_key(key: str) -> str | None:
    """ComfyUI name of a tensor of any accepted layout; None for tensors that are dropped."""
    for old, new in KEY_PREFIX_MAP.items():
        if key.startswith(old):
            key = new + key[len(old) :]
            break
    return None if key in DROP_KEYS else key


def remap_state_dict(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Rename a state dict of any accepted layout to ComfyUI's T5 names (values untouched)."""
    out = {}
    for key, value in sd.items():
        new = remap_key(key)
        if new is not None:
            out[new] = value
    return out


def comfy_t5_config(config: Any, source: str) -> dict[str, Any]:
    """The `config_dict` ComfyUI's `comfy.text_encoders.t5.T5` takes, plus the projector fields.

    `config` is a `T5CompactConfig` (or any object with its attributes); raises `CheckpointError` naming `source`
    for geometry ComfyUI's T5 cannot run (other attention buckets, layer-norm epsilon or activation).
    """
    for name, want in COMFY_T5_FIXED.items():
        got = getattr(config, name, want)
        if got != want:
            raise errors.CheckpointError(f"{source}: {name}={got}; ComfyUI's T5 implementation supports only {want}")
    eps = getattr(config, "layer_norm_epsilon", COMFY_T5_EPS)
    if abs(eps - COMFY_T5_EPS) > 1e-12:
        raise errors.CheckpointError(f"{source}: layer_norm_epsilon={eps}; ComfyUI's T5 uses {COMFY_T5_EPS}")
    ff = config.feed_forward_proj
    if ff not in FEED_FORWARD:
        raise errors.CheckpointError(
            f"{source}: feed_forward_proj={ff!r} is not supported by ComfyUI's T5 (supported: {sorted(FEED_FORWARD)})"
        )
    act = getattr(config, "projection_act", "relu")
    if act not in PROJECTION_ACTS:
        raise errors.CheckpointError(f"{source}: projection_act={act!r}; supported: {PROJECTION_ACTS}")
    dense_act_fn, gated = FEED_FORWARD[ff]
    return {
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "dense_act_fn": dense_act_fn,
        "is_gated_act": gated,
        "projection_hidden_dim": config.projection_hidden_dim,
        "projection_out_dim": config.projection_out_dim,
        "projection_act": act,
        "projection_bias": bool(getattr(config, "projection_bias", False)),
    }


def check_width(config: Mapping[str, Any], expected: int | None, source: str, family: str) -> None:
    """Raise `WidthMismatchError` naming `source` when the projector's output width is not what `family` needs."""
    got = config["projection_out_dim"]
    if expected is not None and got != expected:
        raise errors.WidthMismatchError(
            f"{source}: this compact encoder projects to width {got}, but {family} needs {expected} "
            "(the width of T5-XXL's embeddings); use an encoder distilled for this model family"
        )


def stored_dtype(dtypes: Mapping[str, str]) -> str | None:
    """The dtype name (fp32/fp16/bf16) the file stores its T5 weights in, from header dtypes; None if unknown."""
    for key in ("encoder.final_layer_norm.weight", "encoder.encoder.final_layer_norm.weight", "shared.weight"):
        if key in dtypes:
            return SAFETENSORS_DTYPES.get(dtypes[key])
    return None


def resolve_dtype_option(option: str, stored: str | None) -> tuple[str | None, bool]:
    """(dtype name, forced) for the node's dtype option: "default" keeps the file's dtype, subject to ComfyUI's
    usual choice for the device (as the stock T5 loader does); fp32/fp16/bf16 force it."""
    if option not in DTYPE_OPTIONS:
        raise ValueError(f"dtype must be one of {DTYPE_OPTIONS}, got {option!r}")
    if option == "default":
        return stored, False
    return option, True


def parameter_count(config: Mapping[str, Any]) -> int:
    """Parameters of the compact encoder described by a ComfyUI config (for memory estimates and messages)."""
    d, ff, inner = config["d_model"], config["d_ff"], config["d_kv"] * config["num_heads"]
    per_block = 4 * d * inner + (3 if config["is_gated_act"] else 2) * d * ff + 2 * d
    hidden, out = config["projection_hidden_dim"], config["projection_out_dim"]
    bias = hidden + out if config["projection_bias"] else 0
    rel = 32 * config["num_heads"]
    return config["vocab_size"] * d + config["num_layers"] * per_block + d + rel + d * hidden + hidden * out + bias


# --- node specs (ComfyUI V1 `INPUT_TYPES` dictionaries, built from a file list) ------------------------------

_T5_TIP = (
    "Compact T5 encoder (.safetensors): ours, or the paper's LifuWang/DistillT5 model.safetensors as downloaded. "
    "Small/Base/Large/XL students, with or without the 'encoder.' wrapper, fp32/fp16/bf16."
)
_DTYPE_TIP = "Weight dtype of the compact T5: default = the file's dtype (as the stock T5 loader), or force one."
_DEVICE_TIP = "As the stock loaders: 'cpu' keeps the text encoders on the CPU."


def _optional() -> dict[str, tuple]:
    return {
        "dtype": (DTYPE_OPTIONS, {"default": "default", "tooltip": _DTYPE_TIP}),
        "device": (DEVICE_OPTIONS, {"advanced": True, "tooltip": _DEVICE_TIP}),
    }


def flux_inputs(files: Sequence[str]) -> dict[str, dict]:
    """Inputs of the FLUX loader (replaces `DualCLIPLoader` with type flux)."""
    files = list(files)
    return {
        "required": {
            "clip_l": (files, {"tooltip": "CLIP-L text encoder (clip_l.safetensors), as in DualCLIPLoader"}),
            "compact_t5": (files, {"tooltip": _T5_TIP}),
        },
        "optional": _optional(),
    }


def sd3_inputs(files: Sequence[str]) -> dict[str, dict]:
    """Inputs of the SD3 loader (replaces `TripleCLIPLoader`)."""
    files = list(files)
    return {
        "required": {
            "clip_l": (files, {"tooltip": "CLIP-L text encoder (clip_l.safetensors)"}),
            "clip_g": (files, {"tooltip": "CLIP-G text encoder (clip_g.safetensors)"}),
            "compact_t5": (files, {"tooltip": _T5_TIP}),
        },
        "optional": _optional(),
    }


def t5_only_inputs(files: Sequence[str]) -> dict[str, dict]:
    """Inputs of the compact-T5-only loader (replaces `CLIPLoader` with a T5-XXL file)."""
    return {
        "required": {
            "compact_t5": (list(files), {"tooltip": _T5_TIP}),
            "type": (T5_ONLY_TYPES, {"tooltip": "as the stock CLIPLoader type of a T5-XXL file (sd3: T5 only)"}),
        },
        "optional": _optional(),
    }


# node id -> (display name, stock node it replaces, description)
NODES: dict[str, tuple[str, str, str]] = {
    "DualCLIPLoaderCompactT5": (
        "DualCLIPLoader (compact T5, FLUX)",
        "DualCLIPLoader",
        "FLUX.1: CLIP-L + a compact T5 encoder instead of T5-XXL. Replaces DualCLIPLoader (type flux).",
    ),
    "TripleCLIPLoaderCompactT5": (
        "TripleCLIPLoader (compact T5, SD3)",
        "TripleCLIPLoader",
        "Stable Diffusion 3: CLIP-L + CLIP-G + a compact T5 encoder instead of T5-XXL. Replaces TripleCLIPLoader.",
    ),
    "CLIPLoaderCompactT5": (
        "CLIPLoader (compact T5 only)",
        "CLIPLoader",
        "A compact T5 encoder alone, for T5-only graphs (SD3 T5-only, Chroma, PixArt, LTX-Video, Mochi, CogVideoX, "
        "HiDream T5-only). Replaces CLIPLoader with a T5-XXL file.",
    ),
}


def slot_error(slot: str, name: str, err: Exception) -> Exception:
    """The same error type, with the node slot and the file name the user picked in front of the message."""
    cls = type(err) if isinstance(err, ValueError | FileNotFoundError) else ValueError
    try:
        return cls(f"{slot} = {name!r}: {err}")
    except TypeError:  # an error class with a different signature
        return ValueError(f"{slot} = {name!r}: {err}")
