"""The training run: validate inputs, load the frozen parts, train the student, checkpoint, log, export."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from ..distill import build_heldout, family_class, heldout_branch_losses, uses_cfg
from ..fileio import atomic_write_text
from . import interrupt
from .checkpoints import load_checkpoint, resolve_resume, save_checkpoint, trim_log
from .config import ConfigError, TrainConfig
from .data import PromptSchedule, load_heldout, load_stages
from .info import heldout_record, null_student, write_training_info
from .models import build_student, load_components, pipeline_family, teacher_name
from .step import StepContext, TeacherSource, train_step
from .teacher_cache import TeacherCache, tokenizer_fingerprint
from .trajectories import TrajectoryPool
from .trajectory_cache import TrajectoryCache

logger = logging.getLogger(__name__)
_DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def required_prompts(schedule: PromptSchedule, heldout: dict[str, list[str]], config: TrainConfig, family: str):
    """Every prompt whose teacher embedding the run needs ("" for the negative of CFG families: SD3, Chroma, LTX)."""
    prompts = schedule.all_prompts() + [p for ps in heldout.values() for p in ps] + list(config.validation_prompts)
    return list(dict.fromkeys(prompts + ([""] if family_class(family).uses_cfg else [])))


def needs_clip(family: str, config: TrainConfig) -> bool:
    return family_class(family).needs_clip(config.zero_pooled)


def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """AdamW with the paper's defaults, or bitsandbytes' 8-bit AdamW (`use_8bit_adam`)."""
    cls = torch.optim.AdamW
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise ImportError("use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from err
        cls = bnb.optim.AdamW8bit
    return cls(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
        eps=config.adam_epsilon,
    )


def _register_hooks(accelerator, student) -> None:
    """Checkpoints hold the student as a `save_pretrained` folder (`student/`), loadable on its own."""
    from ..modeling_t5_compact import T5CompactEncoder

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for model in models:
                accelerator.unwrap_model(model).save_pretrained(Path(output_dir) / "student")
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        while models:
            model = accelerator.unwrap_model(models.pop())
            loaded = T5CompactEncoder.from_pretrained(Path(input_dir) / "student", torch_dtype=torch.float32)
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def train(config: TrainConfig) -> Path:
    """Run training as configured; returns the exported student folder (`<output_dir>/student`)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    # 1. Everything that can be wrong with files is checked before any model loads.
    stages = load_stages(config)
    heldout_prompts = load_heldout(config, stages)
    schedule = PromptSchedule(stages, config.train_batch_size, config.guidance_values(), config.seed)
    cache = TeacherCache(config.teacher_cache) if config.teacher_cache else None
    family = pipeline_family(config.pretrained_model)  # reads model_index.json only
    if family == "flux" and config.mixed_precision == "fp16":
        raise ConfigError(
            "mixed_precision fp16: FLUX's activations overflow fp16 (diffusers clips them for that reason); "
            "use bf16 or no"
        )
    if cache is not None:
        expected = {
            "family": family,
            "teacher": teacher_name(config, family),
            "dtype": str(_DTYPES[config.mixed_precision]).removeprefix("torch."),
            "max_sequence_length": config.max_sequence_length,
        }
        if needs_clip(family, config):
            expected["with_clip"] = True
        cache.check(expected, required_prompts(schedule, heldout_prompts, config, family))
    pool = TrajectoryPool(config.trajectories, config.seed, config.guidance_values()) if config.trajectories else None
    trajectories = TrajectoryCache(config.trajectory_cache) if config.trajectory_cache else None
    if trajectories is not None:
        from .cache import pool_entries, trajectory_meta

        trajectories.check(trajectory_meta(config, family, teacher_name(config, family)), pool_entries(config, stages))
    resume_from = resolve_resume(config.resume, config.output_dir)
    output_dir = Path(config.output_dir)

    # 2. Accelerator and the frozen parts.
    if config.cpu_threads > 0:
        torch.set_num_threads(config.cpu_threads)
    accelerator = Accelerator(
        cpu=_cpu_distributed(),
        mixed_precision=config.mixed_precision,
        log_with=None if config.report_to == "none" else config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    weight_dtype = _DTYPES[config.mixed_precision]
    parts = load_components(
        config,
        load_teacher=cache is None,
        need_clip=cache is None and needs_clip(family, config),
        device=accelerator.device,
        weight_dtype=weight_dtype,
    )
    adapter = parts.adapter
    if cache is not None:
        cache.check({"tokenizer": tokenizer_fingerprint(parts.prompt_encoder.t5_tokenizer)})
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:  # shard the frozen transformer too (untested here)
        adapter.transformer = accelerator.prepare_model(adapter.transformer)
    teacher = TeacherSource(parts.prompt_encoder, parts.teacher_t5, cache, zero_pooled=config.zero_pooled)
    negative = teacher([""], accelerator.device) if uses_cfg(adapter) else None
    negative_ids = parts.prompt_encoder.tokenize([""]) if negative is not None else None
    heldout = build_heldout(
        heldout_prompts,
        parts.prompt_encoder,
        teacher_embeds={c: teacher(ps, accelerator.device) for c, ps in heldout_prompts.items()},
    )

    # 3. The student, its optimizer and schedule.
    student = build_student(config, adapter.text_width)
    optimizer = make_optimizer(config, student.parameters())
    total_steps = config.total_steps()
    updates_per_step = config.num_inference_steps if config.optimizer_step == "timestep" else 1
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps,
        num_training_steps=total_steps * updates_per_step,
    )
    student, optimizer = accelerator.prepare(student, optimizer)
    accelerator.register_for_checkpointing(lr_scheduler)
    _register_hooks(accelerator, student)
    if config.report_to != "none":
        accelerator.init_trackers("t5-compact", config=_scalar_config(config))

    start_step = 0
    if resume_from is not None:
        start_step = load_checkpoint(accelerator, resume_from)
        logger.info("resumed from %s at step %d", resume_from, start_step)

    ctx = StepContext(
        accelerator,
        adapter,
        parts.prompt_encoder,
        teacher,
        student,
        optimizer,
        lr_scheduler,
        num_steps=config.num_inference_steps,
        optimizer_step=config.optimizer_step,
        max_grad_norm=config.max_grad_norm,
        embedding_loss_weight=config.embedding_loss_weight,
        seed=config.seed,
        negative=negative,
        timesteps_per_pass=config.timesteps_per_pass,
        negative_ids=negative_ids,
        uncond_loss=config.uncond_loss,
        pool=pool,
        trajectory_cache=trajectories,
    )
    categories = sorted({s.category for st in stages for s in st.sources})
    history_path = output_dir / "heldout.json"
    # Held-out metric and validation images: at the first stage's training resolution unless set explicitly.
    eval_resolution = config.heldout_resolution or stages[0].resolution

    heldout_kwargs = dict(
        num_steps=config.heldout_num_steps or config.num_inference_steps,
        height=eval_resolution,
        width=eval_resolution,
        guidance=config.heldout_guidance,
        seed=config.heldout_seed,
        batch_size=config.train_batch_size,
        zero_pooled=config.zero_pooled,
        negative=negative,
        negative_ids=negative_ids,
    )
    null_losses: dict[str, float] = {}
    if heldout and accelerator.is_main_process:
        # The null student (teacher's mean embedding over the training prompts): computed once, saved, scored once.
        null = null_student(output_dir, schedule.all_prompts(), teacher, accelerator.device, config)
        null_losses = heldout_branch_losses(adapter, null, heldout, **heldout_kwargs)["cond"]
    final_record: dict = {}

    def evaluate(step: int) -> None:
        if not heldout or not accelerator.is_main_process:
            return
        values = heldout_branch_losses(adapter, accelerator.unwrap_model(student), heldout, **heldout_kwargs)
        record = heldout_record(step, values, null_losses)
        final_record.clear()
        final_record.update(record)
        history = json.loads(history_path.read_text()) if history_path.exists() else []
        history = [h for h in history if h["step"] < step] + [record]
        atomic_write_text(history_path, json.dumps(history, indent=1))
        logs = {}
        for key in ("L_vision", "L_vision_uncond", "L_null", "fidelity"):
            logs.update({f"heldout/{key}/{c}": v for c, v in record.get(key, {}).items()})
        accelerator.log(logs, step=step)

    def validation_images(step: int) -> None:
        if not config.validation_prompts or not accelerator.is_main_process:
            return
        from .validation import save_validation_grid

        res = eval_resolution
        cond = teacher(config.validation_prompts, accelerator.device)
        with torch.no_grad():
            student_t5 = adapter.encode_t5(
                accelerator.unwrap_model(student).eval(),
                parts.prompt_encoder.tokenize(config.validation_prompts).to(accelerator.device),
            )
        save_validation_grid(
            output_dir / "validation" / f"step-{step:07d}.png",
            adapter,
            vae,
            cond,
            student_t5,
            num_steps=config.num_inference_steps,
            height=res,
            width=res,
            guidance=config.heldout_guidance,
            seed=config.seed,
            prompts=config.validation_prompts,
            step=step,
            accelerator=accelerator,
        )

    vae = parts.vae_loader().to(accelerator.device) if config.validation_prompts else None
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        trim_log(output_dir / "train_log.jsonl", start_step)  # drop what a killed run logged after its checkpoint
    if start_step == 0:
        evaluate(0)
        if config.validation_images_steps:
            validation_images(0)
    accelerator.wait_for_everyone()

    bar = tqdm(
        range(total_steps), initial=start_step, desc="train", disable=not (accelerator.is_main_process and config.tqdm)
    )
    rank = accelerator.process_index
    stage = schedule.stage_of(start_step)
    interrupt.arm()
    for step in range(start_step, total_steps):
        batch = schedule.batch(step, rank)
        if batch.stage != stage or step == start_step:
            stage = batch.stage
            logger.info("stage %d (%s): resolution %d", stage, stages[stage].name, batch.resolution)
        result = train_step(ctx, batch, rank)
        done = step + 1
        sums = torch.zeros(2, len(categories), device=accelerator.device)
        for loss, category in zip(result.per_sample.tolist(), batch.categories, strict=True):
            sums[0, categories.index(category)] += loss
            sums[1, categories.index(category)] += 1
        sums = accelerator.reduce(sums, reduction="sum")
        loss = float(sums[0].sum() / sums[1].sum())
        lr = lr_scheduler.get_last_lr()[0]
        if done % config.logging_steps == 0 or done == total_steps:
            logs = {"loss": loss, "lr": lr, "grad_norm": result.grad_norm, "stage": stage}
            logs.update({f"loss/{c}": float(sums[0, i] / sums[1, i]) for i, c in enumerate(categories) if sums[1, i]})
            accelerator.log(logs, step=done)
            if accelerator.is_main_process:
                with open(output_dir / "train_log.jsonl", "a") as log_file:
                    log_file.write(json.dumps({"step": done, **logs}) + "\n")
        bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2e}", stage=stage)
        bar.update(1)
        if config.validation_steps and done % config.validation_steps == 0 and done != total_steps:
            evaluate(done)
        if config.validation_images_steps and done % config.validation_images_steps == 0:
            validation_images(done)
        if done % config.checkpointing_steps == 0 or done == total_steps:
            state = {"step": done, "stage": stage, "loss": loss if math.isfinite(loss) else None}
            save_checkpoint(accelerator, output_dir, done, state, config.checkpoints_total_limit)
        if interrupt.stop_requested(accelerator):  # Ctrl-C / SIGTERM: save (unless just saved) and stop
            state = {"step": done, "stage": stage, "loss": loss if math.isfinite(loss) else None}
            saved = output_dir / f"checkpoint-{done}"
            if not (done % config.checkpointing_steps == 0 or done == total_steps):
                save_checkpoint(accelerator, output_dir, done, state, config.checkpoints_total_limit)
            raise interrupt.TrainingInterrupted(done, saved)
    interrupt.arm(False)
    bar.close()

    evaluate(total_steps)
    accelerator.wait_for_everyone()
    final = output_dir / "student"
    if accelerator.is_main_process:
        teacher_dtype = cache.meta.get("dtype") if cache is not None else str(weight_dtype).removeprefix("torch.")
        info = dict(config=config, family=family, teacher=parts.teacher_name, teacher_dtype=teacher_dtype)
        export_student(
            accelerator.unwrap_model(student),
            final,
            comfyui=config.export_comfyui,
            write_info=lambda folder: write_training_info(folder, stages=stages, heldout=final_record, **info),
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def export_student(student, folder: Path, comfyui: bool = False, write_info=None) -> None:
    """Write the trained student with `save_pretrained` (+ a ComfyUI single file if asked), its training record
    (`write_info(folder)`: `training_info.json`) and its model card (`README.md`, as `t5-compact export` writes it,
    from that record)."""
    from ..export import write_card

    student.eval().save_pretrained(folder)
    if write_info is not None:
        write_info(folder)
    if comfyui:
        from ..convert import save_comfyui

        save_comfyui(student, folder.parent / f"{folder.name}-comfyui.safetensors")
    write_card(student, folder)


def _cpu_distributed() -> bool:
    """True for a multi-process launch (torchrun / `accelerate launch --multi_gpu`) on a machine without CUDA:
    accelerate then needs `cpu=True` to use gloo (`accelerate launch --cpu` alone starts a single process)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _scalar_config(config: TrainConfig) -> dict:
    out = {}
    for key, value in vars(config).items():
        if isinstance(value, (int, float, str, bool)):
            out[key] = value
    return out
