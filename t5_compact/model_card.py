"""The hub model card (`README.md`) of an exported student: metadata via `huggingface_hub.ModelCard`, body from the
student's config, its recorded training (`training_info.json`) and, if given, a `t5-compact bench` result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

# Parameters of the T5-XXL encoder FLUX.1 and SD3 ship (t5-v1_1-xxl encoder, embedding included).
T5XXL_PARAMS = 4_762_310_656
T5XXL_WIDTH = 4096
BF16 = "dtype=torch.bfloat16"
FAMILY_NAMES = {"flux": "FLUX.1", "sd3": "Stable Diffusion 3"}
CITATION = """@inproceedings{wang2025scaling,
  title     = {Scaling Down Text Encoders of Text-to-Image Diffusion Models},
  author    = {Wang, Lifu and Liu, Daqing and Liu, Xinchen and He, Xiaodong},
  booktitle = {CVPR},
  year      = {2025}
}"""


def card_data(config: Mapping[str, Any], info: Mapping[str, Any] | None, license: str = "apache-2.0") -> ModelCardData:
    """The card's YAML metadata: library, base model (the T5 the student started from, when known), tags."""
    info = info or {}
    pipeline = info.get("pipeline") or {}
    family = pipeline.get("family")
    tags = ["t5-compact", "text-encoder", "distillation", "t5", "comfyui"]
    tags += [family] if family else []
    init = info.get("init_from")
    base_model = init if isinstance(init, str) and "/" in init and not init.startswith("tiny:") else None
    extra: dict[str, Any] = {"distilled_from": (info.get("teacher") or {}).get("id")}
    if pipeline.get("id"):
        extra["distilled_for"] = pipeline["id"]
    return ModelCardData(
        library_name="t5-compact",
        license=license,
        base_model=base_model,
        pipeline_tag="feature-extraction",
        tags=tags,
        **{k: v for k, v in extra.items() if v},
    )


def _format_params(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "B" else f"{n / scale:.1f} {unit}"
    return str(n)


def _sizes(config: Mapping[str, Any], params: int) -> list[str]:
    from .bench.report import format_bytes

    return [
        "## Size",
        "",
        "| Encoder | Layers | Width | Output width | Parameters | 16-bit weights |",
        "|---|---|---|---|---|---|",
        f"| this student | {config['num_layers']} | {config['d_model']} | {config['projection_out_dim']} | "
        f"{_format_params(params)} | {format_bytes(params * 2)} |",
        f"| T5-XXL encoder | 24 | 4096 | 4096 | {_format_params(T5XXL_PARAMS)} | {format_bytes(T5XXL_PARAMS * 2)} |",
        "",
        f"{T5XXL_PARAMS / params:,.1f}× fewer parameters than the T5-XXL encoder it replaces.",
        "",
    ]


def _recipe(info: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Training", ""]
    if not info:
        return lines + ["No `training_info.json` was found beside the student: its training is not recorded here.", ""]
    pipeline, teacher = info.get("pipeline") or {}, info.get("teacher") or {}
    family = FAMILY_NAMES.get(pipeline.get("family"), pipeline.get("family") or "?")
    lines += [
        "Vision-based knowledge distillation (Wang et al., CVPR 2025): the student follows the frozen "
        f"{family} transformer's denoising trajectory driven by the teacher's embeddings.",
        "",
        f"- Pipeline: `{pipeline.get('id')}` ({family})",
        f"- Teacher: `{teacher.get('id')}` ({teacher.get('dtype') or 'dtype not recorded'})",
        f"- Student initialised from: `{info.get('init_from') or 'random weights'}`",
        f"- Steps: {info.get('steps')}, T5 tokens per prompt: {info.get('max_sequence_length')}, mixed precision: "
        f"{info.get('mixed_precision')}, seed: {info.get('seed')}",
    ]
    stages = info.get("stages") or []
    if stages:
        lines += ["", "| Stage | Steps | Resolution | Prompt categories |", "|---|---|---|---|"]
        for stage in stages:
            categories = ", ".join(stage.get("categories") or [])
            lines.append(f"| {stage.get('name')} | {stage.get('steps')} | {stage.get('resolution')} | {categories} |")
    return lines + [""]


def _fidelity(info: Mapping[str, Any] | None) -> list[str]:
    heldout = (info or {}).get("heldout") or {}
    values = heldout.get("L_vision") or {}
    if not values:
        return []
    null, fidelity = heldout.get("L_null") or {}, heldout.get("fidelity") or {}
    lines = [
        "## Held-out fidelity",
        "",
        f"L_vision (mean squared difference of the transformer's velocity, student vs teacher) on held-out prompts "
        f"at step {heldout.get('step')}, {heldout.get('resolution')} px, seed {heldout.get('seed')}, guidance "
        f"{heldout.get('guidance')}. The null student (the teacher's mean embedding, the same for every prompt) "
        "is the reference: fidelity = 1 - L_vision / L_null (1 is the teacher, 0 no better than ignoring the prompt).",
        "",
        "| Category | L_vision | Null student L_vision | Fidelity |",
        "|---|---|---|---|",
    ]
    for category, value in values.items():
        ref, fid = null.get(category), fidelity.get(category)
        lines.append(
            f"| {category} | {value:.4g} | {'–' if ref is None else f'{ref:.4g}'} | "
            f"{'–' if fid is None else f'{fid:.3f}'} |"
        )
    return lines + [""]


def _bench(bench: Mapping[str, Any] | None) -> list[str]:
    if not bench:
        return []
    from .bench.report import format_bytes, format_count, format_seconds

    meta, encoders = bench.get("meta") or {}, bench.get("encoders") or []
    dtype = meta.get("dtype", "?")
    shapes = [(t["length"], t["batch"]) for t in (encoders[0].get("timings") or [])] if encoders else []
    headers = ["Encoder", "Params", f"{dtype} on disk", "Peak memory"] + [f"{n} tok × {b}" for n, b in shapes]
    lines = [
        "## Benchmark",
        "",
        f"`t5-compact bench` on {meta.get('hardware', '?')}, device `{meta.get('device', '?')}`, {dtype}; "
        "seconds per encode call (median).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for enc in encoders:
        timings = {(t["length"], t["batch"]): t.get("median_s") for t in enc.get("timings") or []}
        memory = (enc.get("memory") or {}).get("peak_bytes")
        cells = [enc["label"], format_count(enc["params"]), format_bytes((enc.get("disk_bytes") or {}).get(dtype))]
        cells += [format_bytes(memory)] + [format_seconds(timings.get(shape)) for shape in shapes]
        lines.append("| " + " | ".join(cells) + " |")
    if meta.get("command"):
        lines += ["", f"Command: `{meta['command']}`"]
    return lines + [""]


def _usage(repo_id: str, comfyui_file: str | None, pipeline: Mapping[str, Any]) -> list[str]:
    family, pipeline_id = pipeline.get("family"), pipeline.get("id")
    hub_id = isinstance(pipeline_id, str) and pipeline_id.count("/") == 1 and not pipeline_id.startswith("tiny:")
    if family == "sd3":
        base = pipeline_id if hub_id else "stabilityai/stable-diffusion-3.5-medium"
        pipe = f'pipe = StableDiffusion3Pipeline.from_pretrained("{base}", text_encoder_3=compact, {BF16})'
        cls, node = "StableDiffusion3Pipeline", "`TripleCLIPLoader (compact T5, SD3)` in place of `TripleCLIPLoader`"
    else:
        base = pipeline_id if hub_id else "black-forest-labs/FLUX.1-schnell"
        pipe = f'pipe = FluxPipeline.from_pretrained("{base}", text_encoder_2=compact, {BF16})'
        cls, node = "FluxPipeline", "`DualCLIPLoader (compact T5, FLUX)` in place of `DualCLIPLoader`"
    lines = [
        "## Usage",
        "",
        "diffusers (`pip install t5-compact`):",
        "",
        "```python",
        "import torch",
        f"from diffusers import {cls}",
        "from t5_compact import T5CompactEncoder",
        "",
        f'compact = T5CompactEncoder.from_pretrained("{repo_id}", torch_dtype=torch.bfloat16)',
        pipe,
        "```",
        "",
    ]
    name = comfyui_file or f"{repo_id.rsplit('/', 1)[-1]}.safetensors"
    convert = "" if comfyui_file else f" (make it with `t5-compact convert {repo_id} {name}`)"
    lines += [
        f"ComfyUI (the t5-compact node pack): put `{name}`{convert} in `ComfyUI/models/text_encoders/` and use "
        f"{node}; everything downstream stays stock.",
        "",
    ]
    return lines


def render_card(
    repo_id: str,
    config: Mapping[str, Any],
    params: int,
    info: Mapping[str, Any] | None = None,
    bench: Mapping[str, Any] | None = None,
    comfyui_file: str | None = None,
    license: str = "apache-2.0",
) -> ModelCard:
    """The whole card; `repo_id` is what the usage snippet loads (a hub id, or the local folder)."""
    pipeline = (info or {}).get("pipeline") or {}
    family = pipeline.get("family")
    title = f"# {repo_id.rsplit('/', 1)[-1]}: a compact T5 text encoder for {FAMILY_NAMES.get(family, 'FLUX.1 / SD3')}"
    role = "a drop-in replacement for the T5-XXL text encoder"
    if config["projection_out_dim"] != T5XXL_WIDTH:  # e.g. the tiny test pipelines; FLUX.1 and SD3 take 4096
        role = f"for a transformer whose text width is {config['projection_out_dim']} (FLUX.1 and SD3 take 4096)"
    body = [
        title,
        "",
        f"A distilled {config['num_layers']}-layer T5 encoder (width {config['d_model']}) with an MLP projector to "
        f"width {config['projection_out_dim']}: {role}, made with [t5-compact](https://github.com/t5-compact/t5-compact).",
        "",
        *_sizes(config, params),
        *_recipe(info),
        *_fidelity(info),
        *_bench(bench),
        *_usage(repo_id, comfyui_file, pipeline),
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    data = card_data(config, info, license)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
