"""What a run records about itself: the null student, held-out records and `training_info.json` of the export."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from ..distill import NullStudent, family_class, mean_embedding, prompt_fidelity
from .config import TrainConfig
from .data import Stage

logger = logging.getLogger(__name__)
NULL_FILE = "null_student.safetensors"
INFO_FILE = "training_info.json"


def null_student(output_dir: Path, prompts: Sequence[str], teacher, device, config: TrainConfig) -> NullStudent:
    """The null student of a run: the teacher's mean embedding over (up to `null_student_prompts` of) the training
    prompts, computed once and saved as `<output_dir>/null_student.safetensors` (a resumed run with the same prompts,
    teacher and length reads it back)."""
    import hashlib

    from safetensors import safe_open
    from safetensors.torch import save_file

    path = Path(output_dir) / NULL_FILE
    key = json.dumps([teacher_key(config), config.max_sequence_length, config.null_student_prompts, list(prompts)])
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("sha1") == digest:
                return NullStudent(f.get_tensor("embedding")).to(device)
    embedding = mean_embedding(
        prompts, lambda batch: teacher(batch, device).t5, batch_size=16, limit=config.null_student_prompts
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embedding": embedding.cpu().contiguous()}, str(path), metadata={"sha1": digest})
    logger.info("null student: teacher's mean embedding over %d training prompts -> %s", len(prompts), path)
    return NullStudent(embedding).to(device)


def teacher_key(config: TrainConfig) -> list:
    """What the teacher's embeddings depend on (for reusing a saved null student)."""
    return [config.pretrained_model, config.teacher, config.teacher_cache, config.mixed_precision, config.revision]


def heldout_record(step: int, values: dict[str, dict[str, float]], null: dict[str, float]) -> dict:
    """One `heldout.json` entry: L_vision per category, the negative-prompt branch (CFG families), the null
    student's L_vision and the prompt-specific fidelity `1 - L_vision / L_null`."""
    record: dict = {"step": step, "L_vision": values["cond"]}
    if values.get("uncond"):
        record["L_vision_uncond"] = values["uncond"]
    if null:
        record["L_null"] = dict(null)
        record["fidelity"] = prompt_fidelity(values["cond"], null)
    return record


def write_training_info(
    folder: Path,
    config: TrainConfig,
    family: str,
    teacher: str,
    teacher_dtype: str | None,
    stages: Sequence[Stage],
    heldout: dict,
) -> Path:
    """`training_info.json` beside the exported student: what it was distilled against and how well it did."""
    info = {
        "format": "t5-compact-training-info",
        "version": 1,
        "pipeline": {"family": family, "id": config.pretrained_model, "revision": config.revision},
        "teacher": {"id": teacher, "dtype": teacher_dtype},
        "max_sequence_length": config.max_sequence_length,
        "steps": config.total_steps(),
        "stages": [
            {
                "name": s.name,
                "steps": s.steps,
                "resolution": s.resolution,
                "categories": sorted({src.category for src in s.sources}),
            }
            for s in stages
        ],
        "init_from": config.init_from,
        "optimizer_step": config.optimizer_step,
        "uncond_loss": config.uncond_loss if family_class(family).uses_cfg else None,
        "trajectories": config.trajectories,  # 0: fresh noise every step; N: a pool of N per prompt
        "trajectory_cache": bool(config.trajectory_cache),
        "mixed_precision": config.mixed_precision,
        "zero_pooled": config.zero_pooled,
        "seed": config.seed,
        "heldout": {
            "seed": config.heldout_seed,
            "guidance": config.heldout_guidance,
            "resolution": config.heldout_resolution or (stages[0].resolution if stages else config.resolution),
            **heldout,
        },
    }
    path = Path(folder) / INFO_FILE
    path.write_text(json.dumps(info, indent=1) + "\n")
    return path


def read_training_info(source: str | Path) -> dict | None:
    """The `training_info.json` of a local student folder (or of the folder of a single file), else None."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    info = folder / INFO_FILE
    if not info.is_file():
        return None
    try:
        return json.loads(info.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def trained_length(source: str | Path) -> int | None:
    """The student's trained T5 token length from its `training_info.json`, if recorded."""
    info = read_training_info(source)
    value = info.get("max_sequence_length") if info else None
    return value if isinstance(value, int) and value > 0 else None
