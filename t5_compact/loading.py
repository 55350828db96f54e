"""One loader for every compact-encoder source: our folders, the paper's release, single files and hub repos."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from .configuration_t5_compact import T5CompactConfig
from .errors import CheckpointError, CheckpointKeysError, CorruptCheckpointError, EncoderNotFoundError
from .geometry import canonical_key, canonical_shapes, infer_geometry, is_paper_config, paper_config_to_ours

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Keyword arguments that diffusers / transformers pass to `from_pretrained` and that have no meaning here.
_IGNORED_KWARGS = {
    "low_cpu_mem_usage",
    "use_safetensors",
    "max_memory",
    "offload_folder",
    "offload_state_dict",
    "disable_mmap",
    "variant",
    "quantization_config",
    "use_flashpack",
    "trust_remote_code",
    "force_download",
    "proxies",
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """Accept torch dtypes, their names, the short names fp32/fp16/bf16, `"auto"` and None."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}, 'auto' or a torch.dtype")


@dataclass
class Checkpoint:
    """What a source holds, read from headers only: weight files, tensor shapes and dtypes, and config."""

    source: str
    files: list[Path]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str] = field(default_factory=dict)
    config: dict | None = None
    key_file: dict[str, Path] = field(default_factory=dict)


def resolve_source(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    subfolder: str | None = None,
) -> Path:
    """A local file or folder for `source`; hub repo ids are downloaded (or read from the cache when offline)."""
    path = Path(source).expanduser()
    if subfolder:
        path = path / subfolder
    if path.exists():
        return path
    text = str(source)
    if not _REPO_ID.match(text) or text.startswith(".") or text.endswith(_WEIGHT_SUFFIXES):
        raise EncoderNotFoundError(f"{text}: no such file or folder (expected a compact encoder folder or file)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = ["*.json", "*.safetensors"]
    if subfolder:
        patterns = [f"{subfolder}/{p}" for p in patterns]
    try:
        folder = snapshot_download(
            text,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_patterns=patterns,
        )
    except LocalEntryNotFoundError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise EncoderNotFoundError(
            f"{text}: not in the local Hugging Face cache and {why}; download it once online "
            f"(`hf download {text}`) or pass a local path"
        ) from err
    except RepositoryNotFoundError as err:
        raise EncoderNotFoundError(f"{text}: no such repo on the Hugging Face Hub (or it is private)") from err
    except (HfHubHTTPError, OSError) as err:
        raise EncoderNotFoundError(f"{text}: could not download from the Hugging Face Hub: {err}") from err
    path = Path(folder) / subfolder if subfolder else Path(folder)
    return path


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCheckpointError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _safetensors_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Shapes and dtypes of a safetensors file; validates that the file holds every byte its header promises."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("file is shorter than a safetensors header")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > min(size - 8, 100_000_000):
                raise ValueError(f"header length {n} does not fit a file of {size} bytes")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(f"{path}: not a valid safetensors file ({err})") from err
    header.pop("__metadata__", None)
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
    return shapes, dtypes


def _torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A `.bin`/`.pt`/`.pth` state dict, loaded with `weights_only=True` (never an arbitrary unpickle)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure here means an unreadable file
            raise CorruptCheckpointError(f"{path}: not a loadable torch state dict ({err})") from err
    except Exception as err:  # noqa: BLE001 - pickle errors (refused globals, truncation) come in many types
        raise CorruptCheckpointError(f"{path}: not a loadable torch state dict ({err})") from err
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CorruptCheckpointError(f"{path}: expected a dict of tensors")
    return sd


def read_checkpoint(path: Path) -> Checkpoint:
    """Inspect a file or folder without loading tensors (except `.bin`/`.pth`, loaded memory-mapped)."""
    config = None
    if path.is_dir():
        if (path / "config.json").exists():
            config = _read_json(path / "config.json")
        index = path / "model.safetensors.index.json"
        if index.exists():
            weight_map = _read_json(index).get("weight_map", {})
            files = sorted({path / f for f in weight_map.values()})
        elif (path / "model.safetensors").exists():
            files = [path / "model.safetensors"]
        else:
            files = sorted(path.glob("*.safetensors")) or sorted(
                p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth")
            )
        if len(files) != 1 and not index.exists():
            expected = "one model.safetensors (or a sharded index)"
            raise CheckpointError(f"{path}: expected {expected}, found {[f.name for f in files] or 'none'}")
    elif path.suffix in _WEIGHT_SUFFIXES:
        files = [path]
        sibling = path.with_name("config.json")
        if sibling.exists() and path.parent != Path(path.anchor):
            candidate = _read_json(sibling)
            if candidate.get("model_type") in {"t5_compact", "t5"}:
                config = candidate
    else:
        raise CheckpointError(f"{path}: unsupported file type; expected .safetensors (or .bin/.pth state dicts)")
    ckpt = Checkpoint(source=str(path), files=files, shapes={}, config=config)
    for file in files:
        if not file.exists():
            raise EncoderNotFoundError(f"{file}: weight file listed by {path} is missing")
        if file.suffix == ".safetensors":
            shapes, dtypes = _safetensors_header(file)
        else:
            sd = _torch_state_dict(file)
            shapes = {k: tuple(v.shape) for k, v in sd.items()}
            dtypes = {k: str(v.dtype) for k, v in sd.items()}
        ckpt.shapes.update(shapes)
        ckpt.dtypes.update(dtypes)
        ckpt.key_file.update({k: file for k in shapes})
    return ckpt


def build_config(ckpt: Checkpoint) -> tuple[T5CompactConfig, dict[str, tuple[int, ...]]]:
    """The config for a checkpoint, checked against its tensors; also returns the canonical shapes."""
    shapes = canonical_shapes(ckpt.shapes, ckpt.source)
    inferred = infer_geometry(shapes, ckpt.source)
    stored = ckpt.config or {}
    if stored.get("model_type") == "t5_compact":
        fields = {k: v for k, v in stored.items() if k in T5CompactConfig.__dataclass_fields__}
    elif is_paper_config(stored):
        fields = paper_config_to_ours(stored)
    else:
        fields = {}
    for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "projection_out_dim"):
        if key in fields and fields[key] != inferred[key]:
            raise CheckpointKeysError(
                f"{ckpt.source}: config.json says {key}={fields[key]} but the weights have {key}={inferred[key]}"
            )
    try:
        config = T5CompactConfig(**{**fields, **inferred})
    except Exception as err:  # strict-dataclass validation errors
        raise CheckpointError(f"{ckpt.source}: invalid encoder config: {err}") from err
    return config, shapes


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
        raise CheckpointKeysError(f"{source}: not a complete compact encoder: " + "; ".join(parts))


def _load_tensors(ckpt: Checkpoint, device: torch.device | str) -> dict[str, torch.Tensor]:
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
                sd = _torch_state_dict(file)
                out.update({canonical_key(k): sd[k].to(device) for k in keys})
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for damaged data
            raise CorruptCheckpointError(f"{file}: could not read tensors ({err})") from err
    out.pop("encoder.embed_tokens.weight", None)
    return out


def cast_encoder(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """Cast to `dtype`, keeping T5's `wo` projections in fp32 under fp16 (as transformers does) for stability."""
    if dtype is None:
        return model
    model.to(dtype)
    if dtype == torch.float16:
        for name in getattr(model, "_keep_in_fp32_modules", None) or []:
            for mod_name, module in model.named_modules():
                if mod_name.split(".")[-1] == name:
                    module.to(torch.float32)
    return model


def load_compact_encoder(
    source: str | os.PathLike,
    torch_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | torch.device | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    subfolder: str | None = None,
    **kwargs,
):
    """Load a `T5CompactEncoder` from a folder, a single file or a hub repo id (see its `from_pretrained`)."""
    from .modeling_t5_compact import T5CompactEncoder

    unknown = set(kwargs) - _IGNORED_KWARGS
    if unknown:
        raise TypeError(f"T5CompactEncoder.from_pretrained got unexpected keyword arguments {sorted(unknown)}")
    target = resolve_dtype(torch_dtype if torch_dtype is not None else dtype)
    if device is None and device_map is not None:
        if isinstance(device_map, dict):
            if set(device_map) != {""}:
                raise ValueError("a compact encoder is loaded onto one device: pass device_map={'': device}")
            device_map = device_map[""]
        device = device_map
    device = torch.device(device if device not in (None, "auto") else "cpu")

    path = resolve_source(
        source,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        subfolder=subfolder,
    )
    ckpt = read_checkpoint(path)
    config, shapes = build_config(ckpt)
    check_keys(config, shapes, ckpt.source)
    if target == "auto":
        stored = {v for k, v in ckpt.dtypes.items() if "final_projection" in k}
        target = {"F16": torch.float16, "BF16": torch.bfloat16}.get(stored.pop() if len(stored) == 1 else "", None)
        target = target or torch.float32
    target = target or torch.float32

    with torch.device("meta"):
        model = T5CompactEncoder(config)
    state = _load_tensors(ckpt, device)
    model.load_state_dict(state, strict=False, assign=True)
    model.set_input_embeddings(model.shared)
    cast_encoder(model, target)
    model.eval()
    model.name_or_path = str(source)
    return model
