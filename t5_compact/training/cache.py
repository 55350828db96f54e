"""Build a teacher cache for a training config (the `cache-teacher` command)."""

from __future__ import annotations

import torch

from .config import TrainConfig
from .data import PromptSchedule, load_heldout, load_stages
from .loop import _DTYPES, needs_clip, required_prompts
from .models import load_components, pipeline_family
from .teacher_cache import TeacherCache, cache_meta, tokenizer_fingerprint, write_teacher_cache


def build_teacher_cache(config: TrainConfig, encode_batch_size: int = 8, device: str | None = None) -> tuple[int, int]:
    """Encode every prompt the run needs that is not cached yet; returns (added, total cached)."""
    from tqdm.auto import tqdm

    stages = load_stages(config)
    heldout = load_heldout(config, stages)
    schedule = PromptSchedule(stages, config.train_batch_size, config.guidance_values(), config.seed)
    family = pipeline_family(config.pretrained_model)
    prompts = required_prompts(schedule, heldout, config, family)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _DTYPES[config.mixed_precision]
    with_clip = needs_clip(family, config)
    parts = load_components(
        config, load_teacher=True, need_clip=with_clip, device=device, weight_dtype=dtype, load_transformer=False
    )
    tokenizer = tokenizer_fingerprint(parts.prompt_encoder.t5_tokenizer)
    meta = cache_meta(family, parts.teacher_name, config.max_sequence_length, with_clip, dtype, tokenizer)
    bar = tqdm(total=len(prompts), desc="cache-teacher")
    if _exists(config.teacher_cache):
        done = TeacherCache(config.teacher_cache)
        bar.update(sum(p in done for p in prompts))
    added = write_teacher_cache(
        config.teacher_cache,
        prompts,
        lambda batch: parts.prompt_encoder.encode(batch, parts.teacher_t5),
        meta,
        shard_size=config.cache_shard_size,
        batch_size=encode_batch_size,
        progress=bar.update,
    )
    bar.close()
    return added, len(TeacherCache(config.teacher_cache))


def _exists(path: str) -> bool:
    from pathlib import Path

    return (Path(path) / "index.json").is_file()
