"""Inspect a checkpoint from its headers only, and build and check the encoder config it implies.

Reads safetensors headers (with truncation checks), `.bin`/`.pth` state dicts (`weights_only=True`), single-file,
folder and sharded layouts, and the config from config.json (ours or the paper's) or the file's metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import (
    CheckpointError,
    CheckpointKeysError,
    CorruptCheckpointError,
    EncoderNotFoundError,
    NotACompactEncoderError,
)
from .geometry import (
    FIELD_DEFAULTS,
    canonical_key,
    canonical_shapes,
    config_from_metadata,
    infer_geometry,
    is_paper_config,
    paper_config_to_ours,
)
from .geometry import expected_shapes as geometry_shapes
from .sources import TORCH_SUFFIXES, WEIGHT_SUFFIXES

if TYPE_CHECKING:  # the model classes need transformers 5; header reading and checking here do not
    from transformers import PretrainedConfig

    from .configuration_t5_compact import T5CompactConfig

# Fields whose values are fixed by the tensors; a config that disagrees is an error, not a preference.
_SHAPE_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets")
_PROJECTOR_FIELDS = ("projection_hidden_dim", "projection_out_dim", "projection_bias")


@dataclass
class Checkpoint:
    """What a source holds, read from headers only: weight files, tensor shapes and dtypes, and config."""

    source: str
    files: list[Path]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str] = field(default_factory=dict)
    config: dict | None = None
    metadata_config: dict | None = None
    key_file: dict[str, Path] = field(default_factory=dict)
    # `.bin`/`.pth` state dicts have no header: they are loaded once (memory-mapped) and kept here.
    torch_tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCheckpointError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_safetensors_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, str]]:
    """Shapes, dtypes and `__metadata__` of a safetensors file, reading only its header.

    Also checks that the file holds every byte its header promises, so a truncated download is reported here and
    not as an obscure error halfway through loading.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes is shorter than a safetensors header")
            n = int.from_bytes(head, "little")
            if n <= 1 or n > min(size - 8, 100_000_000):
                raise ValueError(f"header length {n} does not fit a file of {size} bytes")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(f"{path}: not a valid safetensors file ({err})") from err
    metadata = header.pop("__metadata__", None) or {}
    shapes, dtypes, end = {}, {}, 0
    try:
        for key, info in header.items():
            shapes[key] = tuple(int(d) for d in info["shape"])
            dtypes[key] = str(info["dtype"])
            end = max(end, int(info["data_offsets"][1]))
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise CorruptCheckpointError(f"{path}: malformed safetensors header ({err})") from err
    if 8 + n + end > size:
        raise CorruptCheckpointError(
            f"{path}: truncated: the header promises {8 + n + end} bytes, the file has {size} "
            "(an interrupted download or copy?); download or convert it again"
        )
    return shapes, dtypes, metadata if isinstance(metadata, dict) else {}


def _torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A `.bin`/`.pt`/`.pth` state dict, loaded with `weights_only=True` (never an arbitrary unpickle)."""
    import pickle

    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # old (non-zip) serialization cannot be memory-mapped
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's text recommends weights_only=False: never repeat any of it
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise CorruptCheckpointError(f"{path}: not a torch state dict (unreadable pickle data)") from err
        raise CorruptCheckpointError(
            f"{path}: refused: besides tensors the file holds a pickled Python object ({found.group(1)}), and "
            "t5-compact never unpickles those (loading it could run code); use a .safetensors file instead"
        ) from err
    except Exception as err:  # noqa: BLE001 - truncation, garbage: all mean "unreadable"
        first = re.split(r"(?<=\.) ", (str(err).strip().splitlines() or [""])[0])[0]
        raise CorruptCheckpointError(
            f"{path}: not a loadable torch state dict (truncated or not a torch file: {type(err).__name__}: {first})"
        ) from err
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CorruptCheckpointError(f"{path}: expected a dict of tensors (a state dict), got {type(sd).__name__}")
    return sd


def _folder_weight_files(path: Path, variant: str | None) -> tuple[list[Path], Path | None]:
    """The weight files of a model folder and the shard index (if sharded)."""
    infix = f".{variant}" if variant else ""
    index = path / f"model{infix}.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CorruptCheckpointError(f"{index}: expected a non-empty 'weight_map'")
        return sorted({path / f for f in weight_map.values()}), index
    single = path / f"model{infix}.safetensors"
    if single.exists():
        return [single], None
    if variant:
        raise EncoderNotFoundError(f"{path}: no model{infix}.safetensors for variant {variant!r}")
    files = sorted(path.glob("*.safetensors")) or sorted(p for p in path.iterdir() if p.suffix in TORCH_SUFFIXES)
    if not files and (path / "model_index.json").exists():
        raise NotACompactEncoderError(
            f"{path}: this is a diffusers pipeline folder, not a compact encoder; pass it as the pipeline (base) and "
            "the compact encoder separately"
        )
    if len(files) != 1:
        found = [f.name for f in files] or "no weight file"
        raise CheckpointError(f"{path}: expected one model.safetensors (or a sharded index), found {found}")
    return files, None


def read_checkpoint(path: Path, variant: str | None = None) -> Checkpoint:
    """Inspect a file or folder without loading tensors (`.bin`/`.pth` are loaded memory-mapped: no header)."""
    path = Path(path)
    config = None
    if path.is_dir():
        if (path / "config.json").exists():
            config = _read_json(path / "config.json")
        files, _ = _folder_weight_files(path, variant)
    elif path.suffix in WEIGHT_SUFFIXES:
        files = [path]
        # A lone `model.safetensors` inside a model folder (e.g. a hub snapshot) keeps its folder's config.
        sibling = path.with_name("config.json")
        if path.name.startswith(("model", "pytorch_model")) and sibling.exists():
            candidate = _read_json(sibling)
            if candidate.get("model_type") == "t5_compact" or is_paper_config(candidate):
                config = candidate
    else:
        raise CheckpointError(
            f"{path}: unsupported file type {path.suffix!r}; expected a .safetensors file (or a .bin/.pth state dict)"
        )
    ckpt = Checkpoint(source=str(path), files=files, shapes={}, config=config)
    for file in files:
        if not file.exists():
            raise EncoderNotFoundError(f"{file}: weight file listed by {path} is missing")
        if file.suffix == ".safetensors":
            shapes, dtypes, metadata = read_safetensors_header(file)
            ckpt.metadata_config = ckpt.metadata_config or config_from_metadata(metadata, str(file))
        else:
            sd = _torch_state_dict(file)
            ckpt.torch_tensors.update(sd)
            shapes = {k: tuple(v.shape) for k, v in sd.items()}
            dtypes = {k: str(v.dtype) for k, v in sd.items()}
        ckpt.shapes.update(shapes)
        ckpt.dtypes.update(dtypes)
        ckpt.key_file.update(dict.fromkeys(shapes, file))
    return ckpt


def _config_fields(config: dict | PretrainedConfig | None) -> dict[str, object]:
    """Our config fields from our config.json, the paper's config.json, or a config object (unknown keys kept)."""
    if config is not None and not isinstance(config, Mapping):
        config = config.to_dict()
    if not config:
        return {}
    if config.get("model_type") == "t5_compact":
        skip = {"model_type", "transformers_version", "architectures", "_name_or_path"}
        return {k: v for k, v in config.items() if k not in skip}
    if is_paper_config(config):
        return paper_config_to_ours(config)
    return {}


def resolve_fields(
    ckpt: Checkpoint, config: PretrainedConfig | dict | None = None
) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The config fields of a checkpoint, checked against its tensors, and its canonical shapes (no transformers).

    The fields come from `config` if given, else the folder's config.json (ours or the paper's), else the file's
    safetensors metadata, else the tensor shapes alone (with the paper's defaults for what shapes cannot tell).
    """
    shapes = canonical_shapes(ckpt.shapes, ckpt.source)
    inferred = infer_geometry(shapes, ckpt.source)
    if config is not None:
        fields, origin = _config_fields(config), "the config passed in"
    elif ckpt.config is not None:
        fields, origin = _config_fields(ckpt.config), "config.json"
    else:
        fields, origin = _config_fields(ckpt.metadata_config), "the file's metadata config"
    for key in (*_SHAPE_FIELDS, *_PROJECTOR_FIELDS):
        if key in fields and fields[key] != inferred[key]:
            raise CheckpointKeysError(
                f"{ckpt.source}: {origin} says {key}={fields[key]!r} but the weights have {key}={inferred[key]!r}"
            )
    gated = str(fields.get("feed_forward_proj", inferred["feed_forward_proj"])).startswith("gated-")
    if gated != inferred["feed_forward_proj"].startswith("gated-"):
        raise CheckpointKeysError(
            f"{ckpt.source}: {origin} says feed_forward_proj={fields['feed_forward_proj']!r} but the weights "
            f"{'have' if not gated else 'lack'} gated feed-forward tensors (wi_0/wi_1)"
        )
    # Equal where both define a shape field; the config keeps activation choices; defaults fill the rest.
    return {**FIELD_DEFAULTS, **inferred, **fields}, shapes


def build_config(
    ckpt: Checkpoint, config: PretrainedConfig | dict | None = None
) -> tuple[T5CompactConfig, dict[str, tuple[int, ...]]]:
    """`resolve_fields` as a `T5CompactConfig` (needs transformers 5); also returns the canonical shapes."""
    from .configuration_t5_compact import T5CompactConfig

    fields, shapes = resolve_fields(ckpt, config)
    merged = {k: v for k, v in fields.items() if k in T5CompactConfig.__dataclass_fields__}
    try:
        result = T5CompactConfig(**merged)
    except Exception as err:  # noqa: BLE001 - strict-dataclass validation raises several types
        raise CheckpointError(f"{ckpt.source}: invalid encoder config: {err}") from err
    return result, shapes


# Floating dtypes a weight may be stored in (safetensors header names and torch names); others are refused.
FLOAT_DTYPES = frozenset(
    {"F64", "F32", "F16", "BF16", "torch.float64", "torch.float32", "torch.float16", "torch.bfloat16"}
)


def check_dtypes(ckpt: Checkpoint, keys: set[str] | None = None) -> None:
    """Raise `CheckpointKeysError` for an integer, bool or other non-float weight, from the header alone."""
    for key, dtype in ckpt.dtypes.items():
        if dtype not in FLOAT_DTYPES and (keys is None or canonical_key(key) in keys):
            file = ckpt.key_file.get(key, ckpt.source)
            raise CheckpointKeysError(
                f"{file}: tensor {key} is stored as {dtype}; an encoder's weights are floating point "
                "(F32, F16 or BF16): the file is damaged or not an encoder"
            )


def expected_shapes(config: T5CompactConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of a `T5CompactEncoder` with this config, computed on the meta device."""
    from .modeling_t5_compact import T5CompactEncoder

    with torch.device("meta"):
        model = T5CompactEncoder(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes.pop("encoder.embed_tokens.weight", None)
    return shapes


def check_keys(config: T5CompactConfig | Mapping[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise `CheckpointKeysError` listing missing, unexpected or mis-shaped tensors.

    `config` is a `T5CompactConfig` or its fields (`resolve_fields`); the expected tensors come from
    `geometry.expected_shapes`, so this runs without building a model (or importing transformers).
    """
    fields = config if isinstance(config, Mapping) else config.to_dict()
    want = geometry_shapes(fields)
    missing = sorted(set(want) - set(shapes))
    unexpected = sorted(set(shapes) - set(want))
    wrong = sorted(k for k in set(want) & set(shapes) if want[k] != shapes[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors: {missing[:6]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors: {unexpected[:6]}")
        if wrong:
            parts.append("wrong shapes: " + ", ".join(f"{k} {shapes[k]} != {want[k]}" for k in wrong[:6]))
        raise CheckpointKeysError(
            f"{source}: not a complete compact encoder (expected the {len(want)} tensors of a "
            f"{fields['num_layers']}-layer d_model={fields['d_model']} encoder + projector): " + "; ".join(parts)
        )
