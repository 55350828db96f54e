"""The ComfyUI nodes (classic V1 API); the only file that talks to ComfyUI's UI side."""

from __future__ import annotations

from typing import Any

import folder_paths
import torch

from . import logic
from .model import load_compact_clip

_FOLDER = "text_encoders"  # ComfyUI lists models/text_encoders and the legacy models/clip under this key


def _files() -> list[str]:
    return folder_paths.get_filename_list(_FOLDER)


def _load(family: str, compact_t5: str, clips: list[tuple[str, str]], dtype: str, device: str):
    model_options: dict[str, Any] = {}
    if device == "cpu":  # as the stock loaders
        model_options["load_device"] = model_options["offload_device"] = torch.device("cpu")
    clip = load_compact_clip(
        family,
        (compact_t5, folder_paths.get_full_path_or_raise(_FOLDER, compact_t5)),
        tuple((slot, name, folder_paths.get_full_path_or_raise(_FOLDER, name)) for slot, name in clips),
        dtype,
        model_options,
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
        return _load("flux", compact_t5, [("clip_l", clip_l)], dtype, device)


class TripleCLIPLoaderCompactT5(_Loader):
    DESCRIPTION = logic.NODES["TripleCLIPLoaderCompactT5"][2]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict]:
        return logic.sd3_inputs(_files())

    def load_clip(self, clip_l: str, clip_g: str, compact_t5: str, dtype: str = "default", device: str = "default"):
        return _load("sd3", compact_t5, [("clip_l", clip_l), ("clip_g", clip_g)], dtype, device)


class CLIPLoaderCompactT5(_Loader):
    DESCRIPTION = logic.NODES["CLIPLoaderCompactT5"][2]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict]:
        return logic.t5_only_inputs(_files())

    def load_clip(self, compact_t5: str, type: str = "sd3", dtype: str = "default", device: str = "default"):
        return _load(logic.T5_ONLY_FAMILIES[type], compact_t5, [], dtype, device)


NODE_CLASS_MAPPINGS = {
    "DualCLIPLoaderCompactT5": DualCLIPLoaderCompactT5,
    "TripleCLIPLoaderCompactT5": TripleCLIPLoaderCompactT5,
    "CLIPLoaderCompactT5": CLIPLoaderCompactT5,
}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: spec[0] for node_id, spec in logic.NODES.items()}
