"""Which transformers this environment has, read from package metadata (transformers itself is not imported).

The model classes (`T5CompactConfig`, `T5CompactEncoder`, pipelines, training) need transformers 5. The header-only
parts (`errors`, `geometry`, `checkpoint` reading and checking, and the ComfyUI node pack built on them) also run on
transformers 4.50+, ComfyUI's own floor, so installing the node pack never upgrades a ComfyUI environment.
"""

from __future__ import annotations

import importlib.metadata

TRANSFORMERS_NEEDED = 5


def transformers_version() -> str | None:
    """The installed transformers version string, or None when it is not installed."""
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def has_transformers_5() -> bool:
    """True when the installed transformers is 5.x or newer."""
    version = transformers_version()
    try:
        return version is not None and int(version.split(".")[0]) >= TRANSFORMERS_NEEDED
    except ValueError:
        return False


def require_transformers_5(what: str) -> None:
    """Raise a one-line `ImportError` naming the transformers version `what` needs, unless it is installed."""
    if not has_transformers_5():
        found = transformers_version() or "none"
        raise ImportError(
            f"{what} needs transformers>={TRANSFORMERS_NEEDED}.0 (this environment has {found}): "
            f"pip install 'transformers>={TRANSFORMERS_NEEDED}.0'; the ComfyUI nodes work without it"
        )
