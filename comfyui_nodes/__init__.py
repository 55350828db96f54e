"""ComfyUI nodes for compact T5 encoders; ComfyUI loads them through the repository's root `__init__.py`.

Layout (one job per file, as in ComfyUI-GGUF): `nodes.py` is the only file that talks to ComfyUI's UI side;
`loader.py` turns files into state dicts; `model.py` builds the encoder on ComfyUI's own text-encoder machinery;
`logic.py` is pure (no comfy import) and runs in the normal test suite; `core.py` finds the `t5_compact` core.
"""
