"""Check a `--device` before anything loads, so a missing GPU is reported as such and never blamed on a file."""

from __future__ import annotations

from .errors import DeviceError


def check_device(device: object) -> None:
    """Raise `DeviceError` (one line) for a device this machine does not have: `cuda` without a GPU, `cuda:3` with
    two, `mps` off Apple silicon, or a name torch does not know."""
    import torch

    if device is None or device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"--device {device}: not a device name ({err}); use cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {device}: MPS (Apple silicon) is not available on this machine")
