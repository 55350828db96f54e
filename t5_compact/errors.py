"""Exceptions raised for bad checkpoints and mismatched components.

Standard library only (importable without torch). All are `ValueError` (or `FileNotFoundError`) subclasses so
callers that catch the builtin types keep working; each message names the file or value at fault and what was expected.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be loaded as a compact encoder."""


class NotACompactEncoderError(CheckpointError):
    """The file is another model: a T5-XXL (or other projector-less T5) encoder, a CLIP text model, ..."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, not a safetensors/JSON file, or otherwise unreadable."""


class CheckpointKeysError(CheckpointError):
    """Tensors are missing, unexpected, or have shapes that disagree with the config."""


class WidthMismatchError(ValueError):
    """The encoder's output width differs from the width the diffusion transformer expects."""


class EncoderNotFoundError(FileNotFoundError):
    """The path does not exist, or the hub repo cannot be resolved (e.g. not cached while offline)."""


class UsageError(ValueError):
    """A bad command-line option or input value (a negative length, an output name of the wrong type, ...)."""


class DeviceError(UsageError):
    """The requested device does not exist on this machine (e.g. `cuda` without a GPU)."""


# What a command-line tool reports as a one-line error (exit code 2) instead of a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (CheckpointError, WidthMismatchError, EncoderNotFoundError, UsageError)
