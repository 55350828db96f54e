"""t5-compact: distilled T5 text encoders as drop-in replacements for T5-XXL in FLUX.1 and SD3.

The package imports lazily, so `t5-compact --help` and the light modules (`errors`, `geometry`, `checkpoint`) do
not pay for transformers: the public names below load their module on first use. `import t5_compact` also puts
`t5_compact.modeling_t5_compact` in `sys.modules` (imported on first use), which is what diffusers needs to reload a
saved pipeline; the model module registers the classes with transformers' `AutoConfig` / `AutoModel` when it runs
(at once here if transformers is already imported, else on first use of a model class).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from typing import TYPE_CHECKING

from .compat import has_transformers_5, require_transformers_5
from .errors import (
    CheckpointError,
    CheckpointKeysError,
    CorruptCheckpointError,
    EncoderNotFoundError,
    NotACompactEncoderError,
    WidthMismatchError,
)

if TYPE_CHECKING:
    from .configuration_t5_compact import STUDENT_SIZES, T5CompactConfig, compact_config
    from .modeling_t5_compact import T5CompactEncoder
    from .pipelines import load_pipeline

__version__ = "0.1.0"
__all__ = [
    "STUDENT_SIZES",
    "CheckpointError",
    "CheckpointKeysError",
    "CorruptCheckpointError",
    "EncoderNotFoundError",
    "NotACompactEncoderError",
    "T5CompactConfig",
    "T5CompactEncoder",
    "WidthMismatchError",
    "compact_config",
    "load_pipeline",
]
# Public name -> the submodule that defines it (imported on first access).
_LAZY = {
    "STUDENT_SIZES": "configuration_t5_compact",
    "T5CompactConfig": "modeling_t5_compact",  # via the model module, so AutoModel is registered too
    "compact_config": "configuration_t5_compact",
    "T5CompactEncoder": "modeling_t5_compact",
    "load_pipeline": "pipelines",
}
_MODEL_MODULE = f"{__name__}.modeling_t5_compact"


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_transformers_5(f"t5_compact.{name}")  # transformers 4 (a ComfyUI environment): one line, not a traceback
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _DeferredModule(types.ModuleType):
    """Stands in `sys.modules` for a submodule until one of its names is used, then imports it and becomes it.

    Dunder lookups (`__file__`, `__path__`, ... which tools read while scanning `sys.modules`) never import it.
    """

    def __init__(self, spec: importlib.machinery.ModuleSpec):
        super().__init__(spec.name)
        self.__spec__, self.__loader__, self.__file__ = spec, spec.loader, spec.origin
        self.__package__ = spec.parent

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        try:
            real = importlib.import_module(self.__name__)
        except BaseException:
            sys.modules.setdefault(self.__name__, self)
            raise
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def _install_model_module() -> None:
    """Make `t5_compact.modeling_t5_compact` visible in `sys.modules` now, imported on first use."""
    if _MODEL_MODULE in sys.modules or not has_transformers_5():
        return
    if "transformers" in sys.modules:  # the expensive part is paid already: register with AutoModel now
        importlib.import_module(_MODEL_MODULE)
        return
    sys.modules[_MODEL_MODULE] = _DeferredModule(importlib.util.find_spec(_MODEL_MODULE))


_install_model_module()
