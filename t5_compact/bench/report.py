"""Benchmark results: JSON, a markdown report with ratio tables, and a size-vs-latency PNG chart."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .latency import Timing
from .memory import MemoryResult


@dataclass
class EncoderResult:
    """Everything measured for one encoder."""

    label: str
    source: str
    kind: str
    random: bool
    params: int
    disk_bytes: dict[str, int]
    disk_bytes_written: int | None = None
    memory: MemoryResult | None = None
    timings: list[Timing] = field(default_factory=list)

    def latency(self, length: int, batch: int, cpu: bool = False) -> float | None:
        """Median seconds per call at (length, batch) (wall clock, or CPU time), or None if not measured."""
        for timing in self.timings:
            if (timing.length, timing.batch) == (length, batch):
                return timing.cpu_median if cpu else timing.median
        return None


@dataclass
class BenchResult:
    """A whole run: settings and hardware (`meta`), the encoders, and the label ratios are taken against."""

    meta: dict[str, object]
    encoders: list[EncoderResult]
    reference: str

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [(t.length, t.batch) for t in self.encoders[0].timings] if self.encoders else []

    def get(self, label: str) -> EncoderResult:
        return next(e for e in self.encoders if e.label == label)

    def ratios(self, encoder: EncoderResult) -> dict[str, float | None]:
        """Reference value ÷ this encoder's value for every figure (> 1: smaller / faster than the reference)."""
        ref = self.get(self.reference)
        out: dict[str, float | None] = {"params": _ratio(ref.params, encoder.params)}
        for dtype, size in encoder.disk_bytes.items():
            out[f"disk_{dtype}"] = _ratio(ref.disk_bytes.get(dtype), size)
        if encoder.memory and ref.memory:
            out["peak_memory"] = _ratio(ref.memory.peak_bytes, encoder.memory.peak_bytes)
            out["loaded_memory"] = _ratio(ref.memory.loaded_bytes, encoder.memory.loaded_bytes)
        for length, batch in self.shapes:
            out[f"latency_{length}x{batch}"] = _ratio(ref.latency(length, batch), encoder.latency(length, batch))
        for length, batch in self.shapes:
            out[f"cpu_time_{length}x{batch}"] = _ratio(
                ref.latency(length, batch, cpu=True), encoder.latency(length, batch, cpu=True)
            )
        return out

    def to_dict(self) -> dict[str, object]:
        encoders = []
        for enc in self.encoders:
            item = asdict(enc)
            item["timings"] = [t.to_dict() for t in enc.timings]
            item["ratios_vs_reference"] = self.ratios(enc)
            encoders.append(item)
        return {
            "meta": self.meta,
            "reference": self.reference,
            "ratio_definition": "reference value / encoder value (> 1 means smaller or faster than the reference)",
            "encoders": encoders,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _ratio(ref: float | None, value: float | None) -> float | None:
    if ref is None or value is None or value <= 0:
        return None
    return ref / value


def format_count(n: float) -> str:
    """4.76 B, 129.6 M, 28.4 K."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "B" else f"{n / scale:.1f} {unit}"
    return str(int(n))


def format_bytes(n: float | None) -> str:
    """Decimal units, as disk sizes are usually quoted: 9.52 GB, 259 MB."""
    if n is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            value = n / scale
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float | None) -> str:
    """10.5 s, 0.32 s, 83 ms, 0.41 ms."""
    if s is None:
        return "–"
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 0.1:
        return f"{s:.2f} s"
    if s >= 0.01:
        return f"{s * 1e3:.0f} ms"
    return f"{s * 1e3:.2f} ms"


def format_ratio(r: float | None) -> str:
    if r is None:
        return "–"
    return f"{r:.1f}×" if r < 100 else f"{r:.0f}×"


def to_markdown(result: BenchResult, chart: str | None = None) -> str:
    """The report: setup, sizes and memory, latency, and every figure as a ratio to the reference."""
    meta = result.meta
    dtype = str(meta["dtype"])
    mem_name = "Peak GPU memory" if str(meta["device"]).startswith("cuda") else "Peak RSS"
    lines = [
        "# Encoder benchmark",
        "",
        f"- Hardware: **{meta['hardware']}**",
        f"- Device `{meta['device']}`, dtype `{dtype}`, threads {meta['threads']}; torch {meta['torch']}, "
        f"transformers {meta['transformers']}",
        f"- Latency: median of {meta['repeats']} calls after {meta['warmup']} warm-up call(s), models alternating "
        "call by call in one process; random token ids, no attention mask (as the pipelines call the encoder).",
        f"- {mem_name}: each encoder alone in a fresh process, above the empty process, load + one encode at "
        f"{meta['memory_shape']}."
        if meta.get("memory_shape")
        else f"- {mem_name}: not measured.",
        "- Random-weight rows are exact geometries (speed and size do not depend on the values).",
        f"- Machine load average (1/5/15 min) before / after: {meta.get('load_average_before')} / "
        f"{meta.get('load_average_after')} (above the thread count, other work shared the CPU and slowed timings)",
        f"- Command: `{meta['command']}`",
        "",
        "## Size and memory",
        "",
    ]
    if not result.encoders:
        return "\n".join(lines) + "\n"
    dtypes = list(result.encoders[0].disk_bytes)
    headers = ["Encoder", "Weights", "Params"] + [f"{d} on disk" for d in dtypes] + [f"{mem_name} ({dtype})"]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for enc in result.encoders:
        weights = "random (geometry)" if enc.random else "checkpoint"
        cells = [enc.label, weights, format_count(enc.params)] + [format_bytes(enc.disk_bytes[d]) for d in dtypes]
        cells.append(format_bytes(enc.memory.peak_bytes) if enc.memory else "–")
        lines.append("| " + " | ".join(cells) + " |")
    shapes = result.shapes
    lines += ["", f"## Encode latency ({dtype}, seconds per call)", ""]
    lines.append("| Encoder | " + " | ".join(f"{length} tok × {batch}" for length, batch in shapes) + " |")
    lines.append("|" + "---|" * (1 + len(shapes)))
    for enc in result.encoders:
        cells = [enc.label] + [format_seconds(enc.latency(length, batch)) for length, batch in shapes]
        lines.append("| " + " | ".join(cells) + " |")
    if not str(meta["device"]).startswith("cuda"):
        lines += ["", f"CPU time per call (all {meta['threads']} threads; less affected by other work on the CPU):"]
        lines += ["", "| Encoder | " + " | ".join(f"{length} tok × {batch}" for length, batch in shapes) + " |"]
        lines.append("|" + "---|" * (1 + len(shapes)))
        for enc in result.encoders:
            cells = [enc.label] + [format_seconds(enc.latency(length, batch, cpu=True)) for length, batch in shapes]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Ratios to {result.reference} (its figure ÷ the encoder's: how many times smaller / faster)",
        "",
    ]
    cpu = not str(meta["device"]).startswith("cuda")
    headers = ["Params", f"{dtype} on disk", mem_name] + [f"{length}×{batch}" for length, batch in shapes]
    keys = ["params", f"disk_{dtype}", "peak_memory"] + [f"latency_{length}x{batch}" for length, batch in shapes]
    if cpu:
        headers += [f"CPU time {length}×{batch}" for length, batch in shapes]
        keys += [f"cpu_time_{length}x{batch}" for length, batch in shapes]
    lines.append("| Encoder | " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * (1 + len(headers)))
    for enc in result.encoders:
        r = result.ratios(enc)
        cells = [enc.label] + [format_ratio(r.get(key)) for key in keys]
        lines.append("| " + " | ".join(cells) + " |")
    written = [e for e in result.encoders if e.disk_bytes_written]
    if written:
        files = ", ".join(f"{e.label} {e.disk_bytes_written:,} bytes" for e in written)
        lines += ["", f"Written `.safetensors` files ({dtype}), checking the computed sizes: {files}."]
    if chart:
        lines += ["", f"![size vs latency]({chart})"]
    return "\n".join(lines) + "\n"


def plot_size_vs_latency(result: BenchResult, path: str | Path) -> Path:
    """Log-log scatter: on-disk size (bench dtype) against median latency, one marker per length at batch 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtype = str(result.meta["dtype"])
    batch = min(b for _, b in result.shapes)
    lengths = sorted({length for length, b in result.shapes if b == batch})
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    markers = "os^Dv<>p"
    for i, length in enumerate(lengths):
        xs = [e.disk_bytes[dtype] / 1e9 for e in result.encoders]
        ys = [e.latency(length, batch) for e in result.encoders]
        ax.scatter(xs, ys, marker=markers[i % len(markers)], label=f"{length} tokens", zorder=3)
    longest = lengths[-1]
    for enc in result.encoders:
        ax.annotate(
            enc.label,
            (enc.disk_bytes[dtype] / 1e9, enc.latency(longest, batch)),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(0.2)
    ax.set_xlabel(f"weights on disk, {dtype} (GB)")
    ax.set_ylabel(f"encode latency, batch {batch} (s)")
    ax.set_title(f"Encoder size vs latency — {result.meta['hardware']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(result: BenchResult, out_dir: str | Path, stem: str = "bench") -> dict[str, Path]:
    """Write `<stem>.json`, `<stem>.png` and `<stem>.md` (which links the chart) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "png": out / f"{stem}.png", "md": out / f"{stem}.md"}
    paths["json"].write_text(result.to_json() + "\n")
    plot_size_vs_latency(result, paths["png"])
    paths["md"].write_text(to_markdown(result, chart=paths["png"].name))
    return paths
