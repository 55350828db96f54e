"""The `t5_compact` core modules that the node pack reuses (geometry, errors, header-only checkpoint reading).

These run on transformers 4.50+ too (ComfyUI's floor): nothing here needs the transformers-5 model classes.

Cloned into `ComfyUI/custom_nodes/`, ComfyUI imports this repository as one package, so `comfyui_nodes` is a
subpackage and the core is its sibling `t5_compact` subpackage of the same checkout: imported relatively, so the
nodes always run the core they were shipped with and nothing touches `sys.path`. Imported on its own (the test
suite, a pip-installed t5-compact), `comfyui_nodes` is top-level and the core is the `t5_compact` package.
"""

from __future__ import annotations

if __package__ and "." in __package__:  # <pack>.comfyui_nodes, as ComfyUI loads a custom node package
    from ..t5_compact import checkpoint, errors, geometry
else:  # top-level `comfyui_nodes` (tests, tools)
    from t5_compact import checkpoint, errors, geometry

__all__ = ["checkpoint", "errors", "geometry"]
