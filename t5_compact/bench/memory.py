"""Peak memory of one encoder, measured in a fresh Python process (so other models and allocator caches of the
benchmark process do not count).

The child imports torch, runs a micro model once (lazy imports, thread pools), resets the peak counters, builds
or loads the encoder, then encodes the largest (length, batch) once. A checkpoint's peak includes loading it; a
random geometry's starts after the random fill (whose temporaries are an artifact of the benchmark).
On CPU it reports resident memory (RSS) above the baseline: after loading, and its peak (Linux `VmHWM`, reset
through `/proc/self/clear_refs`; elsewhere `ru_maxrss`). On CUDA it reports `torch.cuda.memory_allocated` after
loading and `torch.cuda.max_memory_allocated`.
The child runs `main` with one JSON request as its argument; the result is the last line of its stdout, as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

from .models import EncoderSpec

_CHILD = "import sys; from t5_compact.bench.memory import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class MemoryResult:
    """Bytes above the empty-process baseline: with the weights loaded, and at peak while encoding."""

    loaded_bytes: int
    peak_bytes: int
    baseline_bytes: int
    method: str  # "VmHWM", "ru_maxrss" or "cuda.max_memory_allocated"


def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return _proc_status("VmHWM") is not None


def _current_rss() -> int:
    rss = _proc_status("VmRSS")
    if rss is None:
        try:
            import psutil

            rss = psutil.Process().memory_info().rss
        except ImportError:  # no /proc and no psutil: the peak so far is the best available figure
            rss = _peak_rss(False)[0]
    return rss


def _peak_rss(resettable: bool) -> tuple[int, str]:
    if resettable:
        return _proc_status("VmHWM") or 0, "VmHWM"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "ru_maxrss"


def _warm_up_runtime(spec: EncoderSpec, dtype) -> None:
    """Import lazily loaded modules and start torch's thread pools with a micro model of the same class, so the
    baseline already holds what every model pays once."""
    import torch
    from transformers import T5Config, T5EncoderModel

    from ..configuration_t5_compact import T5CompactConfig
    from ..modeling_t5_compact import T5CompactEncoder
    from .models import encode

    micro = dict(vocab_size=32, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=1)
    if spec.kind == "t5":
        model = T5EncoderModel(T5Config(**micro, feed_forward_proj="gated-gelu", is_encoder_decoder=False))
    else:
        model = T5CompactEncoder(T5CompactConfig(**micro, projection_hidden_dim=64, projection_out_dim=32))
    encode(model.to(dtype).eval(), torch.randint(2, 32, (4, 256)))  # big enough to start the thread pool
    del model
    _release_free_memory()


def _release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc `malloc_trim`), so the measured model cannot reuse resident
    pages that the baseline already counts."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_in_this_process(request: dict) -> MemoryResult:
    """The child's side: build the encoder of `request`, encode once, report memory (see the module docstring)."""
    import torch

    from ..loading import resolve_dtype
    from .latency import make_input_ids
    from .models import build_encoder, encode, vocab_size

    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
    spec = EncoderSpec(**request["spec"])
    device = torch.device(request["device"])
    dtype = resolve_dtype(request["dtype"])
    length, batch, seed = int(request["length"]), int(request["batch"]), int(request.get("seed", 0))
    if device.type == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        model = build_encoder(spec, dtype, device, seed)
        loaded = torch.cuda.memory_allocated(device) - baseline
        if spec.random:  # the random fill's temporaries are not the model's
            torch.cuda.reset_peak_memory_stats(device)
        encode(model, make_input_ids(vocab_size(model), length, batch, seed, device))
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - baseline
        return MemoryResult(loaded, peak, baseline, "cuda.max_memory_allocated")
    _warm_up_runtime(spec, dtype)
    resettable = _reset_peak_rss()
    baseline = _current_rss()
    model = build_encoder(spec, dtype, device, seed)
    loaded = _current_rss() - baseline
    if spec.random and resettable:  # the random fill's temporaries are not the model's
        _reset_peak_rss()
    encode(model, make_input_ids(vocab_size(model), length, batch, seed, device))
    peak, method = _peak_rss(resettable)
    return MemoryResult(loaded, max(peak - baseline, loaded), baseline, method)


def measure_peak_memory(
    spec: EncoderSpec,
    dtype: str,
    device: str,
    length: int,
    batch: int,
    threads: int | None = None,
    seed: int = 0,
    timeout: float | None = None,
) -> MemoryResult:
    """Measure `spec`'s memory in a fresh Python process (see the module docstring)."""
    request = dict(
        spec=asdict(spec), dtype=dtype, device=device, length=length, batch=batch, threads=threads, seed=seed
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {spec.label} failed:\n{proc.stderr[-4000:]}")
    return MemoryResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    """Child entry point: one JSON request in argv, one JSON result line on stdout."""
    argv = sys.argv[1:] if argv is None else argv
    result = measure_in_this_process(json.loads(argv[0]))
    print(json.dumps(asdict(result)), flush=True)
    return 0
