"""One loader for every compact-encoder source: our folders, the paper's release, single files and hub repos.

Everything is checked from file headers (safetensors) and config before a model is built: the model is then
constructed on the meta device and the tensors are assigned to it, so a wrong file fails fast and cheaply.
Resolving a source lives in `sources`, reading headers and building the config in `checkpoint`; both are
re-exported here.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open

from .checkpoint import (
    Checkpoint,
    build_config,
    check_dtypes,
    check_keys,
    expected_shapes,
    read_checkpoint,
    read_safetensors_header,
)
from .devices import check_device
from .errors import CheckpointKeysError, CorruptCheckpointError
from .geometry import canonical_key
from .sources import is_offline, looks_like_repo_id, resolve_source

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # transformers is imported where a model is built, so header checks stay light
    from transformers import PretrainedConfig

    from .modeling_t5_compact import T5CompactEncoder

__all__ = [
    "Checkpoint",
    "build_config",
    "cast_encoder",
    "check_keys",
    "expected_shapes",
    "is_offline",
    "load_compact_encoder",
    "looks_like_repo_id",
    "read_checkpoint",
    "read_safetensors_header",
    "resolve_dtype",
    "resolve_source",
]

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
        except (SafetensorError, OSError, ValueError, KeyError) as err:  # file errors only (not e.g. GPU memory)
            raise CorruptCheckpointError(f"{file}: could not read tensors ({err})") from err
    out.pop("encoder.embed_tokens.weight", None)
    for key, tensor in out.items():
        if not is_finite(tensor):
            file = next((f for k, f in ckpt.key_file.items() if canonical_key(k) == key), ckpt.source)
            raise CorruptCheckpointError(
                f"{file}: tensor {key} holds NaN or Inf values (a diverged training run or a damaged file); "
                "refusing to load it, since every embedding would be non-finite"
            )
    return out


def is_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite, from one sum (NaN and Inf propagate; no full-size temporary, ~10% of a load);
    a sum that overflows with finite values only (possible in fp16) is confirmed element-wise."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    if bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


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
    from transformers import PretrainedConfig

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
    from transformers import PretrainedConfig

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
    check_device(device)  # a missing GPU is a device error, never blamed on the checkpoint file

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
    check_dtypes(ckpt, set(shapes))
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
