"""Encode latency of several encoders measured side by side, alternating models call by call.

Run alone, a small model keeps its weights in the CPU caches between calls and looks faster than it will be inside a
pipeline; alternating the models (in a rotating order) makes every call start from caches another model has used.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .models import encode, vocab_size


@dataclass
class Timing:
    """Seconds per call of one encoder at one (length, batch): wall clock (`median` is the reported figure) and CPU
    time of this process (all threads; less sensitive to other work on a shared machine)."""

    length: int
    batch: int
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_times)

    def to_dict(self) -> dict[str, object]:
        return {
            "length": self.length,
            "batch": self.batch,
            "median_s": self.median,
            "min_s": min(self.times),
            "max_s": max(self.times),
            "times_s": self.times,
            "cpu_median_s": self.cpu_median,
            "cpu_times_s": self.cpu_times,
        }


def make_input_ids(vocab: int, length: int, batch: int, seed: int, device: torch.device | str) -> torch.Tensor:
    """Deterministic random token ids `[batch, length]` in `[2, vocab)` (past T5's pad and eos ids)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + length * 101 + batch)
    return torch.randint(2, vocab, (batch, length), generator=generator).to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_encoders(
    models: Mapping[str, nn.Module],
    shapes: Sequence[tuple[int, int]],
    repeats: int = 5,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    seed: int = 0,
    on_call: Callable[[], None] | None = None,
) -> dict[str, list[Timing]]:
    """Time every model at every `(length, batch)` in `shapes`, alternating models within each repeat.

    For each shape: `warmup` untimed calls per model, then `repeats` rounds; round `r` calls the models starting at
    index `r` (rotating), so no model always follows the same one. `on_call` is called after every call (progress).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    device = torch.device(device)
    labels = list(models)
    results: dict[str, list[Timing]] = {label: [] for label in labels}
    for length, batch in shapes:
        inputs = {label: make_input_ids(vocab_size(models[label]), length, batch, seed, device) for label in labels}
        timings = {label: Timing(length, batch) for label in labels}
        for _ in range(warmup):
            for label in labels:
                encode(models[label], inputs[label])
                if on_call:
                    on_call()
        for round_index in range(repeats):
            start = round_index % len(labels)
            for label in labels[start:] + labels[:start]:
                _synchronize(device)
                begin, cpu_begin = time.perf_counter(), time.process_time()
                encode(models[label], inputs[label])
                _synchronize(device)
                timings[label].times.append(time.perf_counter() - begin)
                timings[label].cpu_times.append(time.process_time() - cpu_begin)
                if on_call:
                    on_call()
        for label in labels:
            results[label].append(timings[label])
    return results
