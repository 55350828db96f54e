"""The ComfyUI nodes (classic V1 API); the only file that talks to ComfyUI's UI side."""

from __future__ import annotations

from typing import Any

import comfy.utils
import folder_paths
import torch

from . import logic
from .core import errors
from .loader import load_compact_file
from .model import build_clip, load_clip_file

_FOLDER = "text_encoders"  # ComfyUI lists models/text_encoders and the legacy models/clip under this key


def _files() -> list[str]:
    return folder_paths.get_filename_list(_FOLDER)


def _path(slot: str, name: str) -> str:
    return folder_paths.get_full_path_or_raise(_FOLDER, name)


def _model_options(device: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if device == "cpu":  # as the stock loaders
        options["load_device"] = options["offload_device"] = torch.device("cpu")
    return options


def _load_compact(name: str, family: str, width: int | None):
    try:
        return load_compact_file(
            _path("compact_t5", name),
            expected_width=width,
            family=family,
            load_file=lambda p: comfy.utils.load_torch_file(p, safe_load=True),
        )
    except (errors.CheckpointError, errors.WidthMismatchError, errors.EncoderNotFoundError) as err:
        raise logic.slot_error("compact_t5", name, err) from err


def _load_clip(slot: str, name: str):
    try:
        return load_clip_file(_path(slot, name), slot)
    except Exception as err:  # noqa: BLE001 - name the file whatever went wrong reading it
        raise logic.slot_error(slot, name, err) from err


def _build(family: str, compact_name: str, width: int | None, clips: list[tuple[str, str]], dtype: str, device: str):
    compact = _load_compact(compact_name, family, width)
    clip_sds = [_load_clip(slot, name) for slot, name in clips]
    dtype_t5, forced = logic.resolve_dtype_option(dtype, compact.stored_dtype)
    clip = build_clip(
        {"FLUX.1": "flux", "SD3": "sd3", "SD3 (T5 only)": "sd3_t5_only"}.get(family, "pixart"),
        compact,
        clip_sds,
        dtype_t5,
        forced,
        _model_options(device),
        embedding_directory=folder_paths.get_folder_paths("embeddings"),
    )
    return (clip,)


class _Loader:
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"
    CATEGORY = logic.CATEGORY


class DualCLIPLoaderCompactT5(_Loader):
    DESCRIPTION = logic.NODES["DualCLIPLoaderCompactT5"][2]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict]:
        return logic.flux_inputs(_files())

    def load_clip(self, clip_l: str, compact_t5: str, dtype: str = "default", device: str = "default"):
        return _build("FLUX.1", compact_t5, logic.T5XXL_WIDTH, [("clip_l", clip_l)], dtype, device)


class TripleCLIPLoaderCompactT5(_Loader):
    DESCRIPTION = logic.NODES["TripleCLIPLoaderCompactT5"][2]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict]:
        return logic.sd3_inputs(_files())

    def load_clip(self, clip_l: str, clip_g: str, compact_t5: str, dtype: str = "default", device: str = "default"):
        clips = [("clip_l", clip_l), ("clip_g", clip_g)]
        return _build("SD3", compact_t5, logic.T5XXL_WIDTH, clips, dtype, device)


class CLIPLoaderCompactT5(_Loader):
    DESCRIPTION = logic.NODES["CLIPLoaderCompactT5"][2]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict]:
        return logic.t5_only_inputs(_files())

    def load_clip(self, compact_t5: str, type: str = "sd3", dtype: str = "default", device: str = "default"):
        family = {"sd3": "SD3 (T5 only)", "chroma": "Chroma", "pixart": "PixArt"}[type]
        return _build(family, compact_t5, logic.T5XXL_WIDTH, [], dtype, device)


NODE_CLASS_MAPPINGS = {
    "DualCLIPLoaderCompactT5": DualCLIPLoaderCompactT5,
    "TripleCLIPLoaderCompactT5": TripleCLIPLoaderCompactT5,
    "CLIPLoaderCompactT5": CLIPLoaderCompactT5,
}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: spec[0] for node_id, spec in logic.NODES.items()}
