"""The family registry: one adapter file per family, registered here by `register`.

Adding a family = a new file with a `FamilyAdapter` subclass (class attributes + latent maths) and one `register`
line below. Everything else (training, cache, eval, `PromptEncoder`) asks the adapter class, not the family name.
"""

from __future__ import annotations

from torch import nn

from .base import FamilyAdapter, vae_scale_factor_from_config
from .chroma import ChromaAdapter
from .flux import FluxAdapter
from .ltx import LTXAdapter
from .sd3 import SD3Adapter

FAMILIES: dict[str, type[FamilyAdapter]] = {}


def register(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Add a family adapter class to the registry (usable as a decorator)."""
    FAMILIES[cls.family] = cls
    return cls


for _cls in (FluxAdapter, SD3Adapter, ChromaAdapter, LTXAdapter):
    register(_cls)


def family_class(family: str) -> type[FamilyAdapter]:
    """The adapter class registered for `family`; a one-line error naming the known ones otherwise."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(repr(f) for f in FAMILIES)}")
    return FAMILIES[family]


def family_of_class_name(name: str) -> str | None:
    """The family whose `pipeline_prefixes` match a diffusers pipeline class name, or None."""
    return next((f for f, cls in FAMILIES.items() if name.startswith(cls.pipeline_prefixes)), None)


def make_adapter(
    family: str, transformer: nn.Module, scheduler, vae_scale_factor: int = 8, **options
) -> FamilyAdapter:
    """An adapter for `family` around a frozen transformer and its scheduler (`options`: family-specific, e.g.
    LTX's `temporal_compression`, `num_frames`)."""
    cls = family_class(family)
    transformer.requires_grad_(False)
    return cls(transformer, scheduler, vae_scale_factor, **options)


def adapter_from_pipeline(pipe, **options) -> FamilyAdapter:
    """The adapter for a loaded pipeline of a registered family (transformer, scheduler, VAE factors)."""
    from ...pipelines import detect_family

    family = detect_family(pipe)
    merged = family_class(family).pipeline_options(pipe) | options
    return make_adapter(family, pipe.transformer, pipe.scheduler, **merged)


__all__ = [
    "FAMILIES",
    "ChromaAdapter",
    "FamilyAdapter",
    "FluxAdapter",
    "LTXAdapter",
    "SD3Adapter",
    "adapter_from_pipeline",
    "family_class",
    "family_of_class_name",
    "make_adapter",
    "register",
    "vae_scale_factor_from_config",
]
