"""Build a teacher cache for a training config (the `cache-teacher` command)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .config import TrainConfig
from .data import PromptSchedule, load_heldout, load_stages
from .loop import _DTYPES, needs_clip, required_prompts
from .models import load_components, pipeline_family, teacher_name
from .teacher_cache import TeacherCache, cache_meta, tokenizer_fingerprint, write_teacher_cache
from .trajectories import TrajectoryPool, record_trajectories, trajectory_key
from .trajectory_cache import (
    STORAGE_DTYPES,
    check_disk,
    done_keys,
    merge_indices,
    trajectory_bytes,
    write_trajectories,
)


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


def trajectory_meta(config: TrainConfig, family: str, teacher: str) -> dict:
    """What a trajectory cache's velocities depend on (compared by training; `cache-teacher` adds the storage
    dtype, which training reads either way)."""
    return {
        "family": family,
        "pretrained_model": config.pretrained_model,
        "teacher": teacher,
        "dtype": str(_DTYPES[config.mixed_precision]).removeprefix("torch."),
        "transformer_storage_dtype": config.transformer_storage_dtype,
        "num_inference_steps": config.num_inference_steps,
        "trajectories": config.trajectories,
        "seed": config.seed,
        "guidance_values": config.guidance_values(),
        "num_frames": config.num_frames,
        "max_sequence_length": config.max_sequence_length,
        "zero_pooled": config.zero_pooled,
    }


def pool_entries(config: TrainConfig, stages) -> list[tuple[str, int, int]]:
    """Every (prompt, resolution, index) the run's trajectory pool holds: each stage's prompts at its resolution."""
    by_resolution: dict[int, list[str]] = {}
    for stage in stages:
        by_resolution.setdefault(stage.resolution, []).extend(p for s in stage.sources for p in s.prompts)
    return TrajectoryPool(config.trajectories, config.seed, config.guidance_values()).entries(by_resolution)


def build_trajectory_cache(config: TrainConfig, batch_size: int = 4) -> tuple[int, int]:
    """Record the teacher's trajectories of the run's pool (`trajectories` per prompt and stage resolution) into
    `trajectory_cache`, after the embedding cache they read. Under `accelerate launch` every process writes its own
    share of the entries; the main process merges the indices. Returns (added, total cached)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from ..distill import uses_cfg
    from .loop import _cpu_distributed
    from .step import TeacherSource

    stages = load_stages(config)
    load_heldout(config, stages)  # held-out prompts are not trained on, so not pooled
    family = pipeline_family(config.pretrained_model)
    accelerator = Accelerator(cpu=_cpu_distributed(), mixed_precision=config.mixed_precision)
    if accelerator.is_main_process:
        build_teacher_cache(config, device=str(accelerator.device))
    accelerator.wait_for_everyone()
    embeddings = TeacherCache(config.teacher_cache)
    parts = load_components(
        config,
        load_teacher=False,
        need_clip=False,
        device=accelerator.device,
        weight_dtype=_DTYPES[config.mixed_precision],
    )
    adapter = parts.adapter
    teacher = TeacherSource(parts.prompt_encoder, cache=embeddings, zero_pooled=config.zero_pooled)
    negative = teacher([""], accelerator.device) if uses_cfg(adapter) else None
    pool = TrajectoryPool(config.trajectories, config.seed, config.guidance_values())
    meta = trajectory_meta(config, family, teacher_name(config, family)) | {"storage": config.trajectory_dtype}
    directory = Path(config.trajectory_cache)
    entries = pool_entries(config, stages)
    done = done_keys(directory)
    todo = [e for e in entries if trajectory_key(*e) not in done]
    numel = {res: math.prod(adapter.latent_shape(1, res, res)) for res in {e[1] for e in todo}}
    needed = sum(
        trajectory_bytes(numel[res], config.num_inference_steps, config.trajectory_dtype, negative is not None)
        for _, res, _ in todo
    )
    line = check_disk(directory, needed, len(todo))  # every process checks: none starts without the space
    if accelerator.is_main_process:
        print(line, flush=True)
    mine = todo[accelerator.process_index :: accelerator.num_processes]
    storage = STORAGE_DTYPES[config.trajectory_dtype]

    def compute(chunk: list[tuple[str, int, int]]) -> dict:
        with accelerator.autocast():  # the precision context training runs the teacher in
            return record_trajectories(
                adapter, teacher, negative, pool, chunk, config.num_inference_steps, storage, accelerator.device
            )

    bar = tqdm(total=len(mine), desc=f"trajectories (process {accelerator.process_index})")
    added = write_trajectories(
        directory,
        mine,
        compute,
        meta,
        rank=accelerator.process_index,
        batch_size=batch_size,
        shard_size=config.cache_shard_size,
        progress=bar.update,
    )
    bar.close()
    accelerator.wait_for_everyone()
    total = merge_indices(directory, meta) if accelerator.is_main_process else len(entries)
    accelerator.wait_for_everyone()
    return added, total
