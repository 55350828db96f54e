"""Run a benchmark: memory of each encoder in its own process, then all encoders timed side by side in this one."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..loading import resolve_dtype
from .latency import time_encoders
from .memory import measure_peak_memory
from .models import EncoderSpec, build_encoder, count_parameters, parse_encoders
from .report import BenchResult, EncoderResult
from .sizes import weight_bytes, written_safetensors_bytes

DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class BenchSettings:
    """What to measure; see `t5-compact bench --help` for the meaning of each field."""

    encoders: list[EncoderSpec]
    device: str = "cpu"
    dtype: str = "bf16"
    lengths: list[int] = field(default_factory=lambda: [77, 256, 512])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4])
    repeats: int = 5
    warmup: int = 1
    threads: int | None = None
    seed: int = 0
    memory: bool = True
    write_files_below: int = 500_000_000  # write a real .safetensors file for encoders with fewer params
    reference: str | None = None
    command: str = ""
    progress: bool = True

    @classmethod
    def from_strings(cls, encoders: str, **kwargs) -> BenchSettings:
        return cls(encoders=parse_encoders(encoders), **kwargs)


def hardware_description(device: torch.device, threads: int) -> str:
    """`"CPU: Intel Xeon ..., 2 threads"` or `"GPU: NVIDIA H100 ..."`, for the report's hardware line."""
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {name}, {threads} thread{'s' if threads != 1 else ''}"


def _load_average() -> list[float] | None:
    """1/5/15-minute load averages (other work on the machine slows CPU timings); None where unavailable."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def pick_reference(specs: list[EncoderSpec], models: dict[str, torch.nn.Module], wanted: str | None) -> str:
    """`wanted`, else the first plain T5 encoder (the T5-XXL teacher), else the first encoder."""
    labels = [s.label for s in specs]
    if wanted is not None:
        if wanted not in labels:
            from ..errors import UsageError

            raise UsageError(f"--reference {wanted!r} is not one of the encoders {labels}")
        return wanted
    teachers = [s.label for s in specs if s.kind == "t5"]
    wide = [label for label in teachers if models[label].config.d_model == 4096]
    return (wide or teachers or labels)[0]


def run_bench(settings: BenchSettings) -> BenchResult:
    """Measure every encoder of `settings`; returns the result (write it with `report.write_outputs`)."""
    from ..devices import check_device
    from ..errors import UsageError

    check_device(settings.device)
    device = torch.device(settings.device)
    dtype = resolve_dtype(settings.dtype)
    if dtype not in DTYPE_NAMES:
        raise UsageError(f"--dtype must be fp32, bf16 or fp16, got {settings.dtype!r}")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    threads = torch.get_num_threads()
    shapes = [(length, batch) for length in settings.lengths for batch in settings.batch_sizes]
    specs = settings.encoders
    load_before = _load_average()
    progress = dict(disable=not settings.progress, file=sys.stderr)

    memory = {}
    if settings.memory:
        length, batch = max(settings.lengths), max(settings.batch_sizes)
        for spec in tqdm(specs, desc="peak memory (one process each)", unit="encoder", **progress):
            memory[spec.label] = measure_peak_memory(
                spec, DTYPE_NAMES[dtype], str(device), length, batch, threads=threads, seed=settings.seed
            )

    models = {}
    for spec in tqdm(specs, desc="building encoders", unit="encoder", **progress):
        models[spec.label] = build_encoder(spec, dtype, device, settings.seed)
    reference = pick_reference(specs, models, settings.reference)

    calls = len(shapes) * len(specs) * (settings.repeats + settings.warmup)
    with tqdm(total=calls, desc="encode latency (alternating)", unit="call", **progress) as bar:
        timings = time_encoders(
            models, shapes, settings.repeats, settings.warmup, device, settings.seed, on_call=lambda: bar.update()
        )

    results = []
    for spec in specs:
        model = models[spec.label]
        params = count_parameters(model)
        written = written_safetensors_bytes(model, dtype) if params < settings.write_files_below else None
        results.append(
            EncoderResult(
                label=spec.label,
                source=spec.source,
                kind=spec.kind,
                random=spec.random,
                params=params,
                disk_bytes=weight_bytes(params),
                disk_bytes_written=written,
                memory=memory.get(spec.label),
                timings=timings[spec.label],
            )
        )
    import transformers

    memory_shape = f"{max(settings.lengths)} tokens × batch {max(settings.batch_sizes)}"
    meta = dict(
        hardware=hardware_description(device, threads),
        device=str(device),
        dtype=DTYPE_NAMES[dtype],
        threads=threads,
        lengths=settings.lengths,
        batch_sizes=settings.batch_sizes,
        repeats=settings.repeats,
        warmup=settings.warmup,
        seed=settings.seed,
        memory_shape=memory_shape if settings.memory else None,
        torch=torch.__version__,
        transformers=transformers.__version__,
        python=platform.python_version(),
        command=settings.command,
        load_average_before=load_before,
        load_average_after=_load_average(),
    )
    return BenchResult(meta=meta, encoders=results, reference=reference)
