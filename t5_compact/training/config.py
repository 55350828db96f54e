"""Training configuration: one dataclass whose fields are the CLI flags and the YAML keys (CLI overrides file).

Everything here is validated before any model is loaded: unknown keys, wrong types, missing / empty / non-text
prompt files all raise `ConfigError` naming the key or file at fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError


class ConfigError(UsageError):
    """A bad training config or prompt file (raised before any model loads)."""


@dataclass
class TrainConfig:
    """All options of `t5-compact train` / `cache-teacher`. A "step" is one prompt batch = one teacher trajectory."""

    # models
    pretrained_model: str = (
        "tiny:flux"  # diffusers FLUX / SD3 / Chroma / LTX folder or hub id; or tiny:flux, -schnell, sd3, chroma, ltx
    )
    teacher: str | None = None  # T5 teacher override (default: the pipeline's T5-XXL); not loaded with a cache
    init_from: str | None = None  # pretrained T5 (google/flan-t5-base: the paper) or a compact checkpoint
    init_type: str = "auto"  # auto | t5 | compact | tiny
    student_size: str = "base"  # geometry when init_from is None (random init): small/base/large/xl
    revision: str | None = None
    # the algorithm (REFERENCE.md section 2)
    num_inference_steps: int = 20  # Euler steps per trajectory
    resolution: int = 512  # default resolution (px) of stages that do not set one
    guidance_range: list[float] = field(default_factory=lambda: [2.0, 5.0])
    guidance_interval: float = 0.5  # guidance sampled per batch from {min, min+interval, ..., max}
    optimizer_step: str = "timestep"  # timestep (paper: one update per timestep) | trajectory (accumulate)
    timesteps_per_pass: int = (
        1  # trajectory mode: timesteps per batched transformer pass (0: all, ~num_steps x memory)
    )
    uncond_loss: str = "both"  # SD3 (CFG): distil the "" branch too: both | guided | none (cond branch only)
    zero_pooled: bool = True  # zero CLIP's pooled vector for teacher and student (paper, FLUX)
    max_sequence_length: int = 77
    embedding_loss_weight: float = 0.0  # optional auxiliary MSE(student_emb, teacher_emb)
    # optimisation
    learning_rate: float = 1e-4
    weight_decay: float = 1e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    use_8bit_adam: bool = False
    lr_scheduler: str = "constant"  # constant | constant_with_warmup | cosine | linear
    lr_warmup_steps: int = 0  # in optimizer updates
    max_grad_norm: float = 1.0
    train_batch_size: int = 4  # per process
    max_train_steps: int | None = None  # default: the sum of the stages' steps
    seed: int = 0
    # data
    sources: list[dict] = field(default_factory=list)  # [{path, category, weight}] (single-stage runs)
    stages: list[dict] = field(default_factory=list)  # [{name, sources, steps, resolution}]
    heldout: dict[str, Any] = field(default_factory=dict)  # {category: path or [prompts]}
    heldout_count: int = 8  # held-out prompts per category
    teacher_cache: str | None = None  # folder written by cache-teacher
    cache_shard_size: int = 1024
    trajectories: int = 0  # 0: fresh noise every step (paper); N: a pool of N trajectories per prompt, reused
    trajectory_cache: str | None = None  # folder of the pool's teacher velocities (cache-teacher); needs trajectories
    trajectory_dtype: str = "bfloat16"  # storage of the cached velocities: bfloat16 | float32
    # scale and precision
    mixed_precision: str = "no"  # no | bf16 | fp16
    gradient_checkpointing: bool = False  # of the frozen transformer
    cpu_threads: int = 0  # torch intra-op threads per process (0: torch's default); 1 suits tiny models
    transformer_storage_dtype: str | None = None  # e.g. float8_e4m3fn: frozen weights stored in fp8
    # output, checkpoints, logging
    output_dir: str = "t5-compact-student"
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume: str | None = None  # latest | PATH
    logging_steps: int = 1
    report_to: str = "tensorboard"  # tensorboard | none
    validation_steps: int = 0  # every N steps: held-out L_vision per category (0: only at start and end)
    heldout_guidance: float = 3.5
    heldout_seed: int = 0  # noise of the held-out metric (its own seed: runs with other training seeds compare)
    null_student_prompts: int = 1024  # training prompts averaged for the null student (0: all)
    heldout_num_steps: int | None = None  # default: num_inference_steps
    heldout_resolution: int | None = None  # default: the first stage's resolution
    num_frames: int = 9  # video families (LTX): frames per training / held-out video (8k+1)
    validation_prompts: list[str] = field(default_factory=list)
    validation_images_steps: int = 0  # every N steps: PNG grid teacher | student (0: off)
    export_comfyui: bool = False
    tqdm: bool = True

    def stage_list(self) -> list[dict]:
        """The curriculum: declared stages, or one stage made of `sources`."""
        if self.stages:
            return self.stages
        steps = self.max_train_steps if self.max_train_steps is not None else 1000
        return [{"name": "main", "sources": self.sources, "steps": steps, "resolution": self.resolution}]

    def total_steps(self) -> int:
        if self.max_train_steps is not None:
            return self.max_train_steps
        return sum(int(s["steps"]) for s in self.stage_list())

    def guidance_values(self) -> list[float]:
        lo, hi = (self.guidance_range * 2)[:2] if len(self.guidance_range) == 1 else self.guidance_range
        n = int(round((hi - lo) / self.guidance_interval)) if self.guidance_interval > 0 else 0
        return [round(lo + i * self.guidance_interval, 6) for i in range(n + 1)]


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_CHOICES = {
    "init_type": ("auto", "t5", "compact", "tiny"),
    "optimizer_step": ("timestep", "trajectory"),
    "uncond_loss": ("both", "guided", "none"),
    "lr_scheduler": ("constant", "constant_with_warmup", "cosine", "linear"),
    "mixed_precision": ("no", "bf16", "fp16"),
    "report_to": ("tensorboard", "none"),
    "trajectory_dtype": ("bfloat16", "float32"),
}
# Numeric keys that must be > 0 (None allowed where the type is optional) and >= 0.
_POSITIVE = (
    "adam_epsilon",
    "max_sequence_length",
    "resolution",
    "max_train_steps",
    "checkpointing_steps",
    "logging_steps",
    "cache_shard_size",
    "heldout_num_steps",
    "heldout_resolution",
)
_NON_NEGATIVE = (
    "learning_rate",  # 0: a run that changes nothing (used to check the start point)
    "weight_decay",
    "max_grad_norm",
    "lr_warmup_steps",
    "heldout_count",
    "timesteps_per_pass",
    "embedding_loss_weight",
    "cpu_threads",
    "trajectories",
    "validation_steps",
    "validation_images_steps",
    "seed",
    "guidance_interval",
)
_STAGE_KEYS = {"name", "sources", "steps", "resolution"}
_SOURCE_KEYS = {"path", "category", "weight", "field", "prompts"}


def _base_type(tp) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _base_type(args[0])
    return typing.get_origin(tp) or tp


def _check_type(name: str, value: Any) -> Any:
    tp = typing.get_type_hints(TrainConfig)[name]
    base = _base_type(tp)
    if value is None:
        if type(None) in typing.get_args(tp):
            return None
        raise ConfigError(f"config key {name!r} must not be empty")
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is bool and not isinstance(value, bool):
        raise ConfigError(f"config key {name!r} must be true or false, got {value!r}")
    if base in (int, float) and (isinstance(value, bool) or not isinstance(value, base)):
        raise ConfigError(f"config key {name!r} must be a {base.__name__}, got {value!r}")
    if base in (str, list, dict) and not isinstance(value, base):
        raise ConfigError(f"config key {name!r} must be a {base.__name__}, got {type(value).__name__} {value!r}")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigError(f"config key {name!r} must be one of {_CHOICES[name]}, got {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or TOML) config file into a dict; relative prompt paths are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err})") from err
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - yaml/toml raise several types; all mean "bad file"
        raise ConfigError(f"{path}: cannot parse config ({err})") from err
    if data is None:
        raise ConfigError(f"{path}: config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a mapping of keys to values, got {type(data).__name__}")
    data["_config_dir"] = str(path.resolve().parent)
    return data


def build_config(file_values: dict[str, Any], cli_values: dict[str, Any]) -> TrainConfig:
    """A validated `TrainConfig` from file values overridden by the CLI values that were given (not None)."""
    base_dir = Path(file_values.pop("_config_dir", "."))
    unknown = sorted(set(file_values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys are the `t5-compact train` flags")
    values = {k: _check_type(k, v) for k, v in file_values.items()}
    values.update({k: _check_type(k, v) for k, v in cli_values.items() if v is not None})
    config = TrainConfig(**values)
    _resolve_paths(config, base_dir)
    _validate(config)
    return config


def _resolve(path: str, base_dir: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() or p.exists() else base_dir / p)


def _resolve_paths(config: TrainConfig, base_dir: Path) -> None:
    for stage in config.stages:
        for source in stage.get("sources", []) if isinstance(stage, dict) else []:
            if isinstance(source, dict) and "path" in source:
                source["path"] = _resolve(source["path"], base_dir)
    for source in config.sources:
        if isinstance(source, dict) and "path" in source:
            source["path"] = _resolve(source["path"], base_dir)
    for category, value in config.heldout.items():
        if isinstance(value, str):
            config.heldout[category] = _resolve(value, base_dir)


def _validate(config: TrainConfig) -> None:
    if config.sources and config.stages:
        raise ConfigError("give either `sources` (one stage) or `stages`, not both")
    if not config.sources and not config.stages:
        raise ConfigError("no prompt data: set `sources` or `stages` in the config")
    for i, stage in enumerate(config.stage_list()):
        where = f"stages[{i}]"
        if not isinstance(stage, dict):
            raise ConfigError(f"{where} must be a mapping, got {stage!r}")
        if unknown := set(stage) - _STAGE_KEYS:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(_STAGE_KEYS)}")
        if not isinstance(stage.get("steps"), int) or stage["steps"] <= 0:
            raise ConfigError(f"{where}: `steps` must be a positive integer, got {stage.get('steps')!r}")
        if not stage.get("sources"):
            raise ConfigError(f"{where}: no `sources`")
        for j, source in enumerate(stage["sources"]):
            if not isinstance(source, dict):
                raise ConfigError(f"{where}.sources[{j}] must be a mapping with `path`, got {source!r}")
            if unknown := set(source) - _SOURCE_KEYS:
                raise ConfigError(f"{where}.sources[{j}]: unknown key(s) {sorted(unknown)}")
            if "path" not in source and "prompts" not in source:
                raise ConfigError(f"{where}.sources[{j}]: needs `path` (a prompt file) or `prompts` (a list)")
            weight = source.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                raise ConfigError(f"{where}.sources[{j}]: `weight` must be a positive number, got {weight!r}")
    if config.train_batch_size <= 0 or config.num_inference_steps <= 0:
        raise ConfigError("train_batch_size and num_inference_steps must be positive")
    if len(config.guidance_range) not in (1, 2) or config.guidance_range[0] > config.guidance_range[-1]:
        raise ConfigError(f"guidance_range must be [min, max] with min <= max, got {config.guidance_range}")
    if config.num_frames < 1 or (config.num_frames - 1) % 8:
        raise ConfigError(f"num_frames must be 8k+1 (1, 9, 17, ..., as LTX-Video takes), got {config.num_frames}")
    if config.timesteps_per_pass < 0 or config.null_student_prompts < 0:
        raise ConfigError("timesteps_per_pass and null_student_prompts must be 0 or positive")
    if config.checkpoints_total_limit is not None and config.checkpoints_total_limit < 1:
        raise ConfigError("checkpoints_total_limit must be at least 1")
    for name in _POSITIVE:
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ConfigError(f"config key {name!r} must be positive, got {value!r}")
    for name in _NON_NEGATIVE:
        if not getattr(config, name) >= 0:
            raise ConfigError(f"config key {name!r} must be zero or positive, got {getattr(config, name)!r}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(config, name) < 1:
            raise ConfigError(f"config key {name!r} must be in [0, 1), got {getattr(config, name)!r}")
    if config.trajectory_cache:
        if config.trajectories <= 0:
            raise ConfigError(
                f"trajectory_cache needs trajectories: N > 0 (the pool size the cache {config.trajectory_cache} holds "
                f"per prompt), got {config.trajectories}"
            )
        if not config.teacher_cache:  # the embeddings the student's pass still needs (CLIP parts, masks, held-out)
            config.teacher_cache = str(Path(config.trajectory_cache) / "embeddings")
    for name in ("output_dir", "teacher_cache", "trajectory_cache"):
        folder = getattr(config, name)
        if folder and Path(folder).expanduser().exists() and not Path(folder).expanduser().is_dir():
            raise ConfigError(f"{name} {folder}: exists and is not a folder")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--<key>` flag per config key (default None = "not given"), plus `--config FILE`."""
    parser.add_argument("--config", help="YAML/TOML file whose keys are these flags (flags override it)")
    hints = typing.get_type_hints(TrainConfig)
    for name in FIELDS:
        base = _base_type(hints[name])
        flag = f"--{name}"
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif base is list:
            item = float if name == "guidance_range" else str
            parser.add_argument(flag, nargs="+", type=item, default=None)
        elif base is dict:
            continue  # mappings (heldout) only in the config file
        else:
            parser.add_argument(flag, type=base, default=None, choices=_CHOICES.get(name))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge `--config FILE` with the flags given on the command line."""
    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    cli_values = {k: getattr(args, k, None) for k in FIELDS}
    if cli_values.get("sources"):
        cli_values["sources"] = [{"path": p} for p in cli_values["sources"]]
    return build_config(file_values, cli_values)
