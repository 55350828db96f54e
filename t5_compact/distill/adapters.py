"""Compatibility imports: the family adapters live in `t5_compact.distill.families` (one file per family)."""

from .families import (
    FAMILIES,
    ChromaAdapter,
    FamilyAdapter,
    FluxAdapter,
    LTXAdapter,
    SD3Adapter,
    adapter_from_pipeline,
    family_class,
    make_adapter,
    vae_scale_factor_from_config,
)

__all__ = [
    "FAMILIES",
    "ChromaAdapter",
    "FamilyAdapter",
    "FluxAdapter",
    "LTXAdapter",
    "SD3Adapter",
    "adapter_from_pipeline",
    "family_class",
    "make_adapter",
    "vae_scale_factor_from_config",
]
