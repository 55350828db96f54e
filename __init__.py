"""t5-compact as a ComfyUI custom node pack (classic V1 entry point: `NODE_CLASS_MAPPINGS`).

ComfyUI imports this file as a package when the repository sits in `ComfyUI/custom_nodes/`. Outside ComfyUI
(`comfy` not importable) it registers nothing, so the repository stays an ordinary Python project.
"""

import importlib.util

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

# Both of ComfyUI's top-level modules: a stray `comfy` folder on sys.path alone is a namespace package, not ComfyUI.
if __package__ and all(importlib.util.find_spec(name) is not None for name in ("comfy", "folder_paths")):
    from .comfyui_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
