"""Prompt data: files (.txt / .jsonl / .json / .csv), weighted sources with categories, curriculum stages.

The batch of step `s` on process `rank` is a pure function of `(seed, s, rank)`, so resuming at any step
reproduces the exact data order without saving sampler state.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig

_TEXT_FIELDS = ("prompt", "text", "caption")


def read_prompts(path: str | Path, field: str | None = None) -> list[str]:
    """Prompts of a file: `.txt` (one per line), `.jsonl` (a string or an object per line), `.json` (a list of
    strings / objects, or an object whose values are such lists; anything else is refused), `.csv` (column `field`
    or prompt/text/caption). Blank entries are dropped; a missing, empty or non-text file raises `ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise ConfigError(f"{path}: not a text file (binary content)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err})") from err
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".json":
            items = json.loads(text) if text.strip() else []
            if isinstance(items, dict) and all(isinstance(value, list) for value in items.values()):
                items = [p for value in items.values() for p in value]
            if not isinstance(items, list):
                raise ConfigError(
                    f'{path}: expected a JSON list of prompts (strings or {{"prompt": ...}} objects) or an object '
                    f"whose values are such lists, got {_json_kind(items)}"
                )
        elif suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            column = field or next((c for c in _TEXT_FIELDS if rows and c in rows[0]), None)
            if rows and column is None:
                raise ConfigError(f"{path}: no prompt column (looked for {field or _TEXT_FIELDS})")
            items = [row[column] for row in rows]
        elif suffix in (".txt", ""):
            items = text.splitlines()
        else:
            raise ConfigError(f"{path}: unsupported prompt file type {suffix!r}; use .txt, .jsonl, .json or .csv")
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON ({err})") from err
    prompts = [_as_text(item, path, field) for item in items]
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise ConfigError(f"{path}: no prompts in file")
    return prompts


def _json_kind(value) -> str:
    """`a string`, `a number`, `null`, ... for messages about a JSON value of the wrong type."""
    if isinstance(value, dict):
        return "an object whose values are not all lists"
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _as_text(item, path: Path, field: str | None) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in (field,) if field else _TEXT_FIELDS:
            if isinstance(item.get(key), str):
                return item[key]
    raise ConfigError(f"{path}: entry {str(item)[:80]!r} is not a prompt string (or object with {field or 'prompt'})")


@dataclass
class Source:
    """Prompts of one category with a sampling weight."""

    category: str
    prompts: list[str]
    weight: float = 1.0


@dataclass
class Stage:
    """One curriculum stage: its sources, resolution and step budget."""

    name: str
    sources: list[Source]
    steps: int
    resolution: int


def load_stages(config: TrainConfig) -> list[Stage]:
    """Read every prompt file of the curriculum (errors name the file) before any model loads."""
    stages = []
    for i, spec in enumerate(config.stage_list()):
        sources = []
        for src in spec["sources"]:
            prompts = list(src["prompts"]) if "prompts" in src else read_prompts(src["path"], src.get("field"))
            category = src.get("category") or (Path(src["path"]).stem if "path" in src else "default")
            sources.append(Source(category, prompts, float(src.get("weight", 1.0))))
        stages.append(Stage(spec.get("name", f"stage{i}"), sources, int(spec["steps"]), spec.get("resolution")))
        if stages[-1].resolution is None:
            stages[-1].resolution = config.resolution
    return stages


def load_heldout(config: TrainConfig, stages: Sequence[Stage]) -> dict[str, list[str]]:
    """Held-out prompts per category: `heldout` from the config (file path or list), else the last
    `heldout_count` prompts of each category's first source, which are then not used for training."""
    heldout: dict[str, list[str]] = {}
    for category, value in config.heldout.items():
        prompts = read_prompts(value) if isinstance(value, str) else [str(p) for p in value]
        if not prompts:
            raise ConfigError(f"heldout.{category}: no prompts")
        heldout[category] = prompts[: config.heldout_count]
    if not heldout and config.heldout_count > 0:
        for stage in stages:
            for source in stage.sources:
                if source.category not in heldout and len(source.prompts) > config.heldout_count:
                    heldout[source.category] = source.prompts[-config.heldout_count :]
        reserved = {p for prompts in heldout.values() for p in prompts}
        for stage in stages:
            for source in stage.sources:
                source.prompts = [p for p in source.prompts if p not in reserved] or source.prompts
    return heldout


def step_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """A seed determined by (seed, step, rank, stream) only."""
    return ((seed * 1_000_003 + step) * 1009 + rank * 31 + stream) % 2**63


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded with `step_seed`."""
    return torch.Generator().manual_seed(step_seed(seed, step, rank, stream))


@dataclass
class Batch:
    """One step's work: prompts, their categories, stage, resolution and guidance."""

    step: int
    stage: int
    prompts: list[str]
    categories: list[str]
    resolution: int
    guidance: float


class PromptSchedule:
    """Maps a global step to its stage and batch (weighted sampling with replacement, seeded per step)."""

    def __init__(self, stages: Sequence[Stage], batch_size: int, guidance_values: Sequence[float], seed: int = 0):
        self.stages = list(stages)
        self.batch_size = batch_size
        self.guidance_values = list(guidance_values)
        self.seed = seed
        self.bounds = []
        total = 0
        for stage in self.stages:
            total += stage.steps
            self.bounds.append(total)

    def stage_of(self, step: int) -> int:
        """Index of the stage that step `step` (0-based) belongs to (the last stage past the budget)."""
        for i, bound in enumerate(self.bounds):
            if step < bound:
                return i
        return len(self.stages) - 1

    def batch(self, step: int, rank: int = 0, batch_size: int | None = None) -> Batch:
        """The batch of `step` for process `rank` (`batch_size` overrides, e.g. for a short batch)."""
        index = self.stage_of(step)
        stage = self.stages[index]
        gen = step_generator(self.seed, step, rank)
        weights = torch.tensor([s.weight for s in stage.sources], dtype=torch.float64)
        n = batch_size or self.batch_size
        picks = torch.multinomial(weights, n, replacement=True, generator=gen).tolist()
        prompts, categories = [], []
        for source_index in picks:
            source = stage.sources[source_index]
            row = int(torch.randint(len(source.prompts), (1,), generator=gen))
            prompts.append(source.prompts[row])
            categories.append(source.category)
        guidance = self.guidance_values[int(torch.randint(len(self.guidance_values), (1,), generator=gen))]
        return Batch(step, index, prompts, categories, stage.resolution, guidance)

    def all_prompts(self) -> list[str]:
        """Every training prompt of every stage (for the teacher cache), first occurrence order."""
        seen: dict[str, None] = {}
        for stage in self.stages:
            for source in stage.sources:
                seen.update(dict.fromkeys(source.prompts))
        return list(seen)
