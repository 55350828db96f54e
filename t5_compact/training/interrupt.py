"""Ctrl-C (SIGINT) or SIGTERM during training: finish the current step, save a checkpoint, say where, exit 130.

`graceful_stop()` (the `train` command wraps the run in it) turns the signals into a request that the loop reads
after each step with `stop_requested`; outside the training steps (loading models, exporting), or at a second
Ctrl-C, the signal raises `KeyboardInterrupt` at once as usual. A SIGTERM after the first signal is ignored (a
launcher such as torchrun sends one to its workers after Ctrl-C; the checkpoint is being saved).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving `checkpoint` at `step`."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"interrupted at step {step}: saved {checkpoint}; continue with --resume latest")
        self.step, self.checkpoint = step, checkpoint


class _State:
    armed = False  # inside the training steps: a signal becomes a request
    signum: int | None = None


_state = _State()


def _handle(signum: int, frame) -> None:
    if not _state.armed:
        raise KeyboardInterrupt
    if _state.signum is not None:
        if signum == signal.SIGINT:  # a second Ctrl-C: quit now, without saving
            raise KeyboardInterrupt
        return  # e.g. the SIGTERM a launcher sends its workers after Ctrl-C: the save is under way
    _state.signum = signum
    import sys

    print(
        f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint (Ctrl-C again to quit "
        "without saving)",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def graceful_stop() -> Iterator[None]:
    """Route SIGINT/SIGTERM to `stop_requested` while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in _SIGNALS}
    _state.armed, _state.signum = False, None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.armed, _state.signum = False, None


def arm(armed: bool = True) -> None:
    """Called by the loop around its steps: only then is a signal deferred to the end of the step."""
    _state.armed = armed


def stop_requested(accelerator) -> bool:
    """Whether any process got a stop signal (all processes agree, so all save and stop at the same step)."""
    requested = _state.signum is not None
    if accelerator.num_processes > 1:
        import torch

        flag = torch.tensor([float(requested)], device=accelerator.device)
        requested = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    return requested
