"""`t5-compact eval`: fidelity of students to the teacher on held-out prompts, per category.

For every prompt and seed the teacher's trajectory starts from fixed noise (`distill.heldout_latents`). Per student:
mean L_vision along the teacher's trajectories (`distill.heldout_branch_losses`, the function training logs), the
prompt-specific fidelity `1 - L_vision / L_null` against the null student (the teacher's mean embedding), for
classifier-free-guidance families (SD3) the L_vision of the negative-prompt branch, the MSE of the final latents
when the student drives the sampler from the same noise (SD3: guided with the student's own conditional and ""
embeddings), and, with a VAE, the decoded images' PSNR / SSIM against the teacher's; with a CLIP model, the CLIP
score of teacher and student images.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..distill import (
    NullStudent,
    PromptEncoder,
    TextEmbeds,
    adapter_from_pipeline,
    build_heldout,
    heldout_branch_losses,
    heldout_latents,
    mean_embedding,
    sample,
    uses_cfg,
)
from ..loading import resolve_dtype
from ..pipelines import ENCODER_SLOTS, check_width, detect_family, pipeline_family, read_pipeline_config
from .metrics import ClipScorer, latent_mse, psnr, ssim
from .prompts import load_prompt_categories


@dataclass
class EvalSettings:
    """What to evaluate; see `t5-compact eval --help`."""

    pipeline: str
    students: list[tuple[str, str]]  # (label, source)
    prompts: str
    teacher: str | None = None  # default: the pipeline's own T5 encoder
    steps: int = 20
    seeds: list[int] = field(default_factory=lambda: [0])
    guidance: float = 3.5
    resolution: int = 512
    max_sequence_length: int = 77
    max_prompts: int | None = 8
    batch_size: int = 4
    zero_pooled: bool = False
    clip_model: str | None = None
    dtype: str = "bf16"
    device: str = "cpu"
    grid_rows: int = 8
    threads: int | None = None
    null_prompts: str | None = None  # prompts whose mean teacher embedding is the null student (default: evaluated)
    command: str = ""
    progress: bool = True


@dataclass
class PromptOutcome:
    """Metrics of one (prompt, seed) for one student; image metrics are None without a VAE."""

    category: str
    prompt: str
    seed: int
    latent_mse: float
    psnr: float | None = None
    ssim: float | None = None
    clip: float | None = None


@dataclass
class StudentResult:
    """One student: where it came from, its size, L_vision per category and the per-prompt outcomes."""

    label: str
    source: str
    params: int
    l_vision: dict[str, float]
    outcomes: list[PromptOutcome] = field(default_factory=list)
    l_vision_uncond: dict[str, float] = field(default_factory=dict)  # CFG families: the "" branch


@dataclass
class EvalResult:
    """A whole evaluation: settings and hardware (`meta`), categories, teacher CLIP scores, students, images."""

    meta: dict[str, object]
    categories: dict[str, list[str]]
    students: list[StudentResult]
    teacher_clip: dict[tuple[str, int, int], float] = field(default_factory=dict)  # (category, row, seed)
    images: dict[str, dict[str, list[Image.Image]]] = field(default_factory=dict)  # category -> column -> images
    null_l_vision: dict[str, float] = field(default_factory=dict)  # the null student's L_vision per category


def parse_students(text: str) -> list[tuple[str, str]]:
    """`[LABEL=]SOURCE,...` -> [(label, source)]; the default label is the folder / file / repo name."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        label, sep, source = item.partition("=")
        if not sep:
            source = item
            label = Path(item.rstrip("/")).name or item
        out.append((label.strip(), source.strip()))
    labels = [label for label, _ in out]
    if not out or len(set(labels)) != len(labels):
        from ..errors import UsageError

        raise UsageError(f"--students: give one or more sources with distinct labels (LABEL=SOURCE), got {text!r}")
    return out


def load_teacher(source: str, dtype: torch.dtype) -> torch.nn.Module:
    """A teacher T5 encoder: a plain T5 encoder (folder / hub id, e.g. `google/t5-v1_1-xxl`) or a compact one."""
    from transformers import T5EncoderModel

    from ..bench.models import detect_kind
    from ..loading import cast_encoder
    from ..modeling_t5_compact import T5CompactEncoder

    if detect_kind(source) == "t5":
        return cast_encoder(T5EncoderModel.from_pretrained(source, dtype=dtype), dtype).eval()
    return T5CompactEncoder.from_pretrained(source, torch_dtype=dtype).eval()


def load_base_pipeline(settings: EvalSettings, dtype: torch.dtype):
    """The pipeline (FLUX / SD3 / Chroma / LTX), with `settings.teacher` in its T5 slot when given."""
    from diffusers import DiffusionPipeline

    family = pipeline_family(settings.pipeline)
    components = {}
    if settings.teacher:
        components[ENCODER_SLOTS[family]] = load_teacher(settings.teacher, dtype)
    pipe = DiffusionPipeline.from_pretrained(settings.pipeline, dtype=dtype, **components)
    pipe.to(settings.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_student_widths(settings: EvalSettings) -> None:
    """Fail before loading any model when a student's output width differs from the transformer's text width
    (read from config and safetensors headers only)."""
    from ..errors import WidthMismatchError
    from ..loading import build_config, read_checkpoint, resolve_source
    from ..pipeline_slots import text_width

    where = f"{settings.pipeline}/transformer"
    width, key = text_width(read_pipeline_config(settings.pipeline, "transformer/config.json"), where)
    for label, source in settings.students:
        config, _ = build_config(read_checkpoint(resolve_source(source)))
        if config.projection_out_dim != width:
            raise WidthMismatchError(
                f"{source}: student {label!r} outputs width {config.projection_out_dim} but "
                f"{where} expects {key}={width}; use a student trained for it"
            )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _hardware(device: torch.device) -> str:
    from ..bench.run import hardware_description

    return hardware_description(device, torch.get_num_threads())


@torch.no_grad()
def run_eval(settings: EvalSettings) -> EvalResult:
    """Evaluate every student of `settings` against the teacher; returns the result (see `report.write_report`)."""
    from ..modeling_t5_compact import T5CompactEncoder
    from ..training.validation import decode_latents

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    dtype = resolve_dtype(settings.dtype)
    categories = load_prompt_categories(settings.prompts, settings.max_prompts)
    check_student_widths(settings)
    progress = dict(disable=not settings.progress, file=sys.stderr)
    pipe = load_base_pipeline(settings, dtype)
    family = detect_family(pipe)
    teacher_t5 = getattr(pipe, ENCODER_SLOTS[family])
    if teacher_t5 is None:
        raise ValueError(f"{settings.pipeline}: the pipeline has no T5 encoder; pass --teacher")
    adapter = adapter_from_pipeline(pipe)
    encoder = PromptEncoder.from_pipeline(pipe, max_sequence_length=settings.max_sequence_length)
    heldout = build_heldout(categories, encoder, teacher_t5=teacher_t5)
    side = settings.resolution
    size = dict(num_steps=settings.steps, height=side, width=side)
    use_cfg = uses_cfg(adapter) and settings.guidance > 1
    teacher_negative = encoder.encode([""], teacher_t5) if use_cfg else None
    negative_ids = encoder.tokenize([""]) if use_cfg else None
    # The null student: the teacher's mean embedding over the training prompts (`--null-prompts`), else over the
    # evaluated prompts (which include each held-out prompt itself: a slightly stronger baseline).
    null_source = settings.null_prompts or settings.prompts
    null_categories = load_prompt_categories(settings.null_prompts, None) if settings.null_prompts else categories
    null_prompts = [p for ps in null_categories.values() for p in ps]
    t5_device = next(teacher_t5.parameters()).device

    def teacher_t5_embeds(batch: list[str]) -> torch.Tensor:
        return adapter.encode_t5(teacher_t5, encoder.tokenize(batch).to(t5_device))

    null = NullStudent(mean_embedding(null_prompts, teacher_t5_embeds, settings.batch_size, limit=1024)).to(device)
    if device.type == "cuda":  # the teacher's embeddings are computed; free its (T5-XXL: ~9.5 GB) GPU memory
        teacher_t5.to("cpu")
    vae = getattr(pipe, "vae", None)
    scorer = ClipScorer(settings.clip_model, device) if settings.clip_model else None

    def conditioning(embeds: TextEmbeds) -> TextEmbeds:
        return embeds.without_pooled() if settings.zero_pooled else embeds

    def negatives(negative: TextEmbeds | None, count: int) -> TextEmbeds | None:
        return None if negative is None else conditioning(TextEmbeds.cat([negative] * count)).to(device)

    def run_sampler(cond: TextEmbeds, negative: TextEmbeds | None, latents: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(latents), settings.batch_size):
            rows = slice(start, start + settings.batch_size)
            neg = negatives(negative, len(latents[rows]))
            cond_rows = cond[rows].to(device)
            out.append(sample(adapter, cond_rows, latents[rows], negative=neg, guidance=settings.guidance, **size))
        return torch.cat(out)

    def branch_losses(student: torch.nn.Module) -> tuple[dict[str, float], dict[str, float]]:
        """Held-out L_vision per category of the prompt and the "" branch, averaged over the seeds."""
        sums: dict[str, dict[str, float]] = {"cond": {}, "uncond": {}}
        for seed in settings.seeds:
            values = heldout_branch_losses(
                adapter,
                student,
                heldout,
                guidance=settings.guidance,
                seed=seed,
                batch_size=settings.batch_size,
                zero_pooled=settings.zero_pooled,
                negative=teacher_negative,
                negative_ids=negative_ids,
                **size,
            )
            for branch, per_category in values.items():
                for category, value in per_category.items():
                    sums[branch][category] = sums[branch].get(category, 0.0) + value / len(settings.seeds)
        return sums["cond"], sums["uncond"]

    # The teacher: final latents (and images) per category and seed, computed once.
    teacher_latents: dict[tuple[str, int], torch.Tensor] = {}
    teacher_images: dict[tuple[str, int], list[Image.Image]] = {}
    result = EvalResult(meta={}, categories=categories, students=[])
    result.null_l_vision = branch_losses(null)[0]
    jobs = [(c, s) for c in categories for s in settings.seeds]
    for category, seed in tqdm(jobs, desc="teacher trajectories", unit="category×seed", **progress):
        noise = heldout_latents(adapter, len(categories[category]), side, side, seed)
        cond = conditioning(heldout[category].teacher)
        teacher_latents[category, seed] = final = run_sampler(cond, teacher_negative, noise)
        if vae is not None:
            teacher_images[category, seed] = decode_latents(adapter, vae, final, side, side)
            if scorer:
                scores = scorer(teacher_images[category, seed], categories[category])
                for row, score in enumerate(scores):
                    result.teacher_clip[category, row, seed] = score

    for label, source in tqdm(settings.students, desc="students", unit="student", **progress):
        student = T5CompactEncoder.from_pretrained(source, torch_dtype=dtype, device=device).eval()
        check_width(student, adapter.text_width, f"{settings.pipeline}/transformer", adapter.text_width_key)
        l_vision, l_uncond = branch_losses(student)
        student_negative = encoder.encode([""], student) if use_cfg else None
        outcome = StudentResult(label, source, count_parameters(student), l_vision, l_vision_uncond=l_uncond)
        for category, seed in tqdm(jobs, desc=f"{label}: sampling", unit="category×seed", leave=False, **progress):
            prompts = categories[category]
            noise = heldout_latents(adapter, len(prompts), side, side, seed)
            t5 = torch.cat(
                [
                    adapter.encode_t5(student, heldout[category].input_ids[i : i + settings.batch_size].to(device))
                    for i in range(0, len(prompts), settings.batch_size)
                ]
            )
            cond = conditioning(heldout[category].teacher.with_t5(t5))
            final = run_sampler(cond, student_negative, noise)
            mses = latent_mse(final, teacher_latents[category, seed])
            images = [None] * len(prompts)
            clip_scores = [None] * len(prompts)
            if vae is not None:
                images = decode_latents(adapter, vae, final, side, side)
                if scorer:
                    clip_scores = scorer(images, prompts)
                if seed == settings.seeds[0]:
                    columns = result.images.setdefault(category, {"teacher": teacher_images[category, seed]})
                    columns[label] = images
            for row, prompt in enumerate(prompts):
                outcome.outcomes.append(
                    PromptOutcome(
                        category,
                        prompt,
                        seed,
                        mses[row],
                        psnr(images[row], teacher_images[category, seed][row]) if images[row] else None,
                        ssim(images[row], teacher_images[category, seed][row]) if images[row] else None,
                        clip_scores[row],
                    )
                )
        result.students.append(outcome)
        del student

    import diffusers
    import transformers

    result.meta = dict(
        hardware=_hardware(device),
        family=family,
        pipeline=str(settings.pipeline),
        teacher=settings.teacher or f"{settings.pipeline} ({ENCODER_SLOTS[family]})",
        teacher_params=count_parameters(teacher_t5),
        prompts=str(settings.prompts),
        prompts_per_category={c: len(p) for c, p in categories.items()},
        steps=settings.steps,
        seeds=settings.seeds,
        guidance=settings.guidance,
        classifier_free_guidance=use_cfg,
        resolution=settings.resolution,
        max_sequence_length=settings.max_sequence_length,
        zero_pooled=settings.zero_pooled,
        has_vae=vae is not None,
        clip_model=settings.clip_model,
        dtype=str(settings.dtype),
        device=str(device),
        torch=torch.__version__,
        transformers=transformers.__version__,
        diffusers=diffusers.__version__,
        python=platform.python_version(),
        command=settings.command,
        l_vision_function="t5_compact.distill.heldout_branch_losses",
        null_student=f"teacher's mean embedding over {min(len(null_prompts), 1024)} prompts of {null_source}",
        cpu_count=os.cpu_count(),
    )
    return result


def finite_or_none(value: float | None) -> float | str | None:
    """JSON-safe number: `inf` becomes the string "inf" (identical images), NaN becomes None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value
