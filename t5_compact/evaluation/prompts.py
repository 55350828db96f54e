"""Held-out prompts by category, read with the training package's prompt-file reader (one reader for both)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..training.data import read_prompts

PROMPT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv")


def prompt_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The prompt files of `spec`: a folder (its .txt/.jsonl/.json/.csv files, sorted), a file, or several
    (a list or a comma-separated string)."""
    items = [spec] if isinstance(spec, Path) else spec.split(",") if isinstance(spec, str) else list(spec)
    files: list[Path] = []
    for item in items:
        path = Path(str(item).strip()).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PROMPT_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{path}: no prompt files ({', '.join(PROMPT_SUFFIXES)}) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such prompt file or folder")
    return files


def load_prompt_categories(
    spec: str | Path | Sequence[str | Path], max_per_category: int | None = None
) -> dict[str, list[str]]:
    """`{category: prompts}`, one category per file, named by its stem (`color.txt` -> `color`); at most
    `max_per_category` prompts each (the first ones, so the selection is fixed)."""
    categories: dict[str, list[str]] = {}
    for path in prompt_files(spec):
        if path.stem in categories:
            from ..errors import UsageError

            raise UsageError(f"{path}: two prompt files give category {path.stem!r}; rename one")
        prompts = read_prompts(path)
        categories[path.stem] = prompts[:max_per_category] if max_per_category else prompts
    return categories
