"""One loader for every compact-encoder source: our folders, the paper's release, single files and hub repos.

Everything is checked from file headers (safetensors) and config before a model is built: the model is then
constructed on the meta device and the tensors are assigned to it, so a wrong file fails fast and cheaply.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from transformers import PretrainedConfig

from .configuration_t5_compact import T5CompactConfig
from .errors import (
    CheckpointError,
    CheckpointKeysError,
    CorruptCheckpointError,
    EncoderNotFoundError,
    NotACompactEncoderError,
)
from .geometry import (
    canonical_key,
    canonical_shapes,
    config_from_metadata,
    infer_geometry,
    is_paper_config,
    paper_config_to_ours,
)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .modeling_t5_compact import T5CompactEncoder

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
# safetensors header dtype names -> torch dtypes (floating types only; others never decide the load dtype).
_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_TORCH_SUFFIXES = (".bin", ".pt", ".pth")
_WEIGHT_SUFFIXES = (".safetensors", *_TORCH_SUFFIXES)
# A hub repo id: `owner/name`, letters, digits, `-`, `_`, `.` (what huggingface_hub validates, minus length).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# Fields whose values are fixed by the tensors; a config that disagrees is an error, not a preference.
_SHAPE_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets")
_PROJECTOR_FIELDS = ("projection_hidden_dim", "projection_out_dim", "projection_bias")
# Keyword arguments that diffusers / transformers pass to `from_pretrained` and that have no meaning here.
_IGNORED_KWARGS = {
    "low_cpu_mem_usage",
    "use_safetensors",
    "max_memory",
    "offload_folder",
    "offload_state_dict",
    "offload_buffers",
    "disable_mmap",
    "quantization_config",
    "use_flashpack",
    "trust_remote_code",
    "force_download",
    "proxies",
    "adapter_kwargs",
    "_from_auto",
    "_from_pipeline",
    "_commit_hash",
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """Accept torch dtypes, their names (`"bfloat16"`, `"torch.float16"`), fp32/fp16/bf16, `"auto"` and None."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}, 'auto' or a torch.dtype")


def is_offline() -> bool:
    """Whether `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set now, or was when huggingface_hub was imported."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().lower() in {"1", "true", "yes", "on"}


def looks_like_repo_id(text: str) -> bool:
    """True for `owner/name` strings that could be hub repo ids (and not file names or relative paths)."""
    return (
        bool(_REPO_ID.match(text))
        and ".." not in text
        and "--" not in text
        and not text.endswith((*_WEIGHT_SUFFIXES, ".json"))
    )


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


def resolve_source(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    subfolder: str | None = None,
) -> Path:
    """A local file or folder for `source`; hub repo ids are downloaded, or read from the cache when offline.

    An existing local path always wins; otherwise a string `owner/name` is a hub repo id (unless `owner` is a local
    folder: then it is a missing path). With `HF_HUB_OFFLINE=1` (checked at call time) or `local_files_only=True` only
    the local Hugging Face cache is consulted.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if subfolder:
        path = path / subfolder
    if path.exists():
        return path
    # A Path object, or `owner/name` whose `owner` is a local folder, is meant as a path: never ask the hub.
    local_intent = not isinstance(source, str) or Path(text.split("/", 1)[0]).is_dir()
    if local_intent or not looks_like_repo_id(text):
        raise EncoderNotFoundError(
            f"{path if subfolder else text}: no such file or folder; expected a compact encoder folder "
            "(config.json + model.safetensors), a .safetensors file, or a hub repo id such as 'LifuWang/DistillT5'"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = is_offline()
    patterns = ["*.json", "*.safetensors"]
    if subfolder:
        patterns = [f"{subfolder}/{p}" for p in patterns]
    try:
        folder = snapshot_download(
            text,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only or offline,
            allow_patterns=patterns,
        )
    except LocalEntryNotFoundError as err:
        if offline:
            why = "HF_HUB_OFFLINE is set"
        elif local_files_only:
            why = "local_files_only=True"
        else:
            why = "the hub could not be reached"
        raise EncoderNotFoundError(
            f"{text}: not a local path, and the hub repo is not in the local Hugging Face cache"
            f"{f' ({cache_dir})' if cache_dir else ''} while {why}; download it once online "
            f"(`hf download {text}`) or pass a local folder or .safetensors file"
        ) from err
    except RevisionNotFoundError as err:
        raise EncoderNotFoundError(f"{text}: the hub repo has no revision {revision!r}") from err
    except RepositoryNotFoundError as err:
        raise EncoderNotFoundError(
            f"{text}: not a local path, and no such repo on the Hugging Face Hub (or it is private/gated: log in "
            "with `hf auth login`)"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise EncoderNotFoundError(f"{text}: could not download from the Hugging Face Hub: {err}") from err
    path = Path(folder) / subfolder if subfolder else Path(folder)
    if not path.exists():
        raise EncoderNotFoundError(f"{text}: the hub repo has no folder {subfolder!r}")
    return path


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
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # old (non-zip) serialization cannot be memory-mapped
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refused globals, truncation, garbage: all mean "unreadable"
        raise CorruptCheckpointError(
            f"{path}: not a loadable torch state dict with weights_only=True ({type(err).__name__}: {err})"
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
    files = sorted(path.glob("*.safetensors")) or sorted(p for p in path.iterdir() if p.suffix in _TORCH_SUFFIXES)
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
    elif path.suffix in _WEIGHT_SUFFIXES:
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
    """Our config fields from our config.json, the paper's config.json, or a config object."""
    if isinstance(config, PretrainedConfig):
        config = config.to_dict()
    if not config:
        return {}
    if config.get("model_type") == "t5_compact":
        skip = {"model_type", "transformers_version", "architectures", "_name_or_path"}
        return {k: v for k, v in config.items() if k in T5CompactConfig.__dataclass_fields__ and k not in skip}
    if is_paper_config(config):
        return paper_config_to_ours(config)
    return {}


def build_config(
    ckpt: Checkpoint, config: PretrainedConfig | dict | None = None
) -> tuple[T5CompactConfig, dict[str, tuple[int, ...]]]:
    """The config for a checkpoint, checked against its tensors; also returns the canonical shapes.

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
    merged = {**inferred, **fields}  # equal where both define a shape field; the config keeps activation choices
    try:
        result = T5CompactConfig(**merged)
    except Exception as err:  # noqa: BLE001 - strict-dataclass validation raises several types
        raise CheckpointError(f"{ckpt.source}: invalid encoder config: {err}") from err
    return result, shapes


def expected_shapes(config: T5CompactConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of a `T5CompactEncoder` with this config, computed on the meta device."""
    from .modeling_t5_compact import T5CompactEncoder

    with torch.device("meta"):
        model = T5CompactEncoder(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes.pop("encoder.embed_tokens.weight", None)
    return shapes


def check_keys(config: T5CompactConfig, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise `CheckpointKeysError` listing missing, unexpected or mis-shaped tensors."""
    want = expected_shapes(config)
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
            f"{config.num_layers}-layer d_model={config.d_model} encoder + projector): " + "; ".join(parts)
        )


def _load_tensors(ckpt: Checkpoint, device: torch.device) -> dict[str, torch.Tensor]:
    """Canonically named tensors of a checkpoint, read file by file onto `device`."""
    out: dict[str, torch.Tensor] = {}
    for file in ckpt.files:
        keys = [k for k, f in ckpt.key_file.items() if f == file]
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt", device=str(device)) as fh:
                    for key in keys:
                        out[canonical_key(key)] = fh.get_tensor(key)
            else:
                out.update({canonical_key(k): ckpt.torch_tensors[k].to(device) for k in keys})
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for damaged data
            raise CorruptCheckpointError(f"{file}: could not read tensors ({err})") from err
    out.pop("encoder.embed_tokens.weight", None)
    return out


def _stored_dtype(ckpt: Checkpoint, config: dict | None) -> torch.dtype:
    """The dtype `"auto"` means: the config's `dtype`/`torch_dtype`, else the embedding's stored dtype, else fp32."""
    for value in ((config or {}).get("dtype"), (config or {}).get("torch_dtype")):
        if isinstance(value, str) and value.removeprefix("torch.") in _DTYPES:
            return _DTYPES[value.removeprefix("torch.")]
    for key, name in ckpt.dtypes.items():
        if canonical_key(key) == "shared.weight":
            name = name.removeprefix("torch.")
            return _SAFETENSORS_DTYPES.get(name) or _DTYPES.get(name) or torch.float32
    return torch.float32


def cast_encoder(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """Cast to `dtype`, keeping T5's `wo` projections in fp32 under fp16 (as transformers does) for stability."""
    if dtype is None:
        return model
    model.to(dtype)
    if dtype == torch.float16:
        keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])
        for mod_name, module in model.named_modules():
            if mod_name.split(".")[-1] in keep:
                module.to(torch.float32)
    if isinstance(getattr(model, "config", None), PretrainedConfig):
        model.config.dtype = dtype
    return model


def _resolve_device(
    device: torch.device | str | int | None, device_map: str | dict | torch.device | None
) -> torch.device:
    """One device from `device` or a single-device `device_map` (`"auto"`: the accelerator if there is one)."""
    if device is None and device_map is not None:
        if isinstance(device_map, dict):
            if set(device_map) != {""}:
                raise ValueError(
                    f"a compact encoder is loaded onto one device: pass device_map={{'': device}}, got {device_map}"
                )
            device_map = device_map[""]
        device = device_map
    if device in (None, "auto"):
        if device == "auto" and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(device)


def load_compact_encoder(
    source: str | os.PathLike,
    torch_dtype: torch.dtype | str | None = None,
    device: torch.device | str | int | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    config: PretrainedConfig | None = None,
    device_map: str | dict | torch.device | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    subfolder: str | None = None,
    variant: str | None = None,
    **kwargs,
) -> T5CompactEncoder:
    """Load a `T5CompactEncoder` from a folder, a single file or a hub repo id (see its `from_pretrained`).

    `torch_dtype` (or `dtype`): a dtype, its name, or `"auto"`/None (the default, as in transformers 5: the
    checkpoint's own dtype). fp16 keeps T5's `wo` layers in fp32.
    """
    from .modeling_t5_compact import T5CompactEncoder

    unknown = set(kwargs) - _IGNORED_KWARGS
    if unknown:
        raise TypeError(f"T5CompactEncoder.from_pretrained got unexpected keyword arguments {sorted(unknown)}")
    if kwargs.get("quantization_config") is not None:
        logger.warning("%s: quantization_config is not supported for compact encoders; loading unquantized", source)
    if torch_dtype is not None and dtype is not None and resolve_dtype(torch_dtype) != resolve_dtype(dtype):
        raise ValueError(f"pass one of torch_dtype ({torch_dtype}) and dtype ({dtype}), not both")
    target = resolve_dtype(torch_dtype if torch_dtype is not None else dtype)
    if config is not None and not isinstance(config, PretrainedConfig):
        raise TypeError(f"config must be a T5CompactConfig, got {type(config).__name__}")
    device = _resolve_device(device, device_map)

    path = resolve_source(
        source,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        subfolder=subfolder,
    )
    ckpt = read_checkpoint(path, variant=variant)
    model_config, shapes = build_config(ckpt, config)
    check_keys(model_config, shapes, ckpt.source)
    if target in (None, "auto"):
        target = _stored_dtype(ckpt, ckpt.config if config is None else config.to_dict())

    with torch.device("meta"):
        model = T5CompactEncoder(model_config)
    state = _load_tensors(ckpt, device)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected or set(missing) - {"encoder.embed_tokens.weight"}:  # check_keys makes this unreachable
        raise CheckpointKeysError(
            f"{ckpt.source}: tensors do not fit: missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    model.set_input_embeddings(model.shared)
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # cannot happen after check_keys; a guard against silent garbage if T5 grows new buffers
        raise CheckpointKeysError(f"{ckpt.source}: tensors left uninitialised after loading: {left[:6]}")
    cast_encoder(model, target)
    model.eval()
    model.name_or_path = model.config.name_or_path = os.fspath(source)
    return model
