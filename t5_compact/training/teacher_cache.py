"""Teacher cache: the teacher's embeddings (and SD3's CLIP parts) per prompt, in sharded safetensors + an index.

Layout: `<dir>/index.json` (metadata, shard names, prompt key -> [shard, row]) and `<dir>/shard-NNNNN.safetensors`
holding `t5` `[N, L, W]` and, when present, `clip`, `pooled` and `mask` (the T5 token mask of Chroma / LTX).
Shards are written to a temporary name and renamed, the index is replaced atomically after each shard: an
interrupted run resumes where it stopped. Reading uses `safe_open` (memory-mapped), so training never holds the
whole cache or the teacher in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..distill import TextEmbeds
from .config import ConfigError

FORMAT = "t5-compact-teacher-cache"
INDEX = "index.json"


class TeacherCacheError(ConfigError):
    """The cache is missing, incomplete for the requested prompts, or was made for another setup."""


def prompt_key(prompt: str) -> str:
    """The index key of a prompt (sha1 of its UTF-8 text)."""
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def write_teacher_cache(
    directory: str | os.PathLike,
    prompts: Iterable[str],
    encode: Callable[[list[str]], TextEmbeds],
    meta: dict,
    *,
    shard_size: int = 1024,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Encode every prompt not yet cached with `encode` and append shards; returns how many were added.

    `meta` (family, teacher, max_sequence_length, ...) must equal that of an existing cache, else
    `TeacherCacheError` (a cache made with another teacher or length must not be extended silently)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index_path = directory / INDEX
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError as err:
            raise TeacherCacheError(f"{index_path}: corrupt index ({err}); delete the folder to rebuild it") from err
        if index.get("meta") != meta:
            raise TeacherCacheError(
                f"{directory}: existing cache was made with {index.get('meta')}, not {meta}; use another folder"
            )
    else:
        index = {"format": FORMAT, "version": 1, "meta": meta, "shards": [], "prompts": {}}
    todo = list(dict.fromkeys(p for p in prompts if prompt_key(p) not in index["prompts"]))
    added = 0
    for start in range(0, len(todo), shard_size):
        chunk = todo[start : start + shard_size]
        parts = []
        for b in range(0, len(chunk), batch_size):
            parts.append(encode(chunk[b : b + batch_size]).to("cpu"))
            if progress is not None:
                progress(len(chunk[b : b + batch_size]))
        embeds = TextEmbeds.cat(parts)
        shard_index = len(index["shards"])
        name = f"shard-{shard_index:05d}.safetensors"
        tensors = {"t5": embeds.t5.contiguous()}
        if embeds.clip is not None:
            tensors["clip"] = embeds.clip.contiguous()
        if embeds.pooled is not None:
            tensors["pooled"] = embeds.pooled.contiguous()
        if embeds.mask is not None:
            tensors["mask"] = embeds.mask.contiguous()
        tmp = directory / (name + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        os.replace(tmp, directory / name)
        index["shards"].append(name)
        index["prompts"].update({prompt_key(p): [shard_index, row] for row, p in enumerate(chunk)})
        _write_json_atomic(index_path, index)
        added += len(chunk)
    return added


class TeacherCache:
    """Read-only, memory-mapped access to a teacher cache folder."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        index_path = self.directory / INDEX
        if not index_path.is_file():
            raise TeacherCacheError(f"{self.directory}: no {INDEX}; run `t5-compact cache-teacher` first")
        try:
            self.index = json.loads(index_path.read_text())
        except json.JSONDecodeError as err:
            raise TeacherCacheError(f"{index_path}: corrupt index ({err})") from err
        if self.index.get("format") != FORMAT:
            raise TeacherCacheError(f"{index_path}: not a t5-compact teacher cache")
        self.meta: dict = self.index["meta"]
        self._handles: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.index["prompts"])

    def __contains__(self, prompt: str) -> bool:
        return prompt_key(prompt) in self.index["prompts"]

    def check(self, expected: dict, prompts: Sequence[str] = ()) -> None:
        """Raise `TeacherCacheError` if metadata differs from `expected` or some prompts are not cached."""
        wrong = {k: (self.meta.get(k), v) for k, v in expected.items() if self.meta.get(k) != v}
        if wrong:
            raise TeacherCacheError(
                f"{self.directory}: teacher cache made for another setup (cached vs wanted: {wrong}); "
                "rebuild it with `t5-compact cache-teacher` into another folder"
            )
        missing = [p for p in prompts if p not in self]
        if missing:
            raise TeacherCacheError(
                f"{self.directory}: {len(missing)} prompt(s) not cached, e.g. {missing[0][:80]!r}; "
                "rerun `t5-compact cache-teacher` with this config (it resumes)"
            )

    def _handle(self, shard: int):
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.directory / self.index["shards"][shard]), framework="pt")
        return self._handles[shard]

    def get(self, prompts: Sequence[str]) -> TextEmbeds:
        """The cached conditioning of `prompts`, in order (rows read from the memory-mapped shards)."""
        rows = []
        for prompt in prompts:
            location = self.index["prompts"].get(prompt_key(prompt))
            if location is None:
                raise TeacherCacheError(f"{self.directory}: prompt not cached: {prompt[:80]!r}")
            handle = self._handle(location[0])
            row = location[1]
            keys = set(handle.keys())
            parts = {k: handle.get_slice(k)[row : row + 1] for k in ("t5", "clip", "pooled", "mask") if k in keys}
            rows.append(TextEmbeds(**parts))
        return TextEmbeds.cat(rows)


def tokenizer_fingerprint(tokenizer) -> str:
    """`<class>:<sha1 of the vocabulary>[:12]`: identifies the T5 tokenizer a cache's token ids came from."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return f"{type(tokenizer).__name__}:{hashlib.sha1(vocab.encode('utf-8')).hexdigest()[:12]}"


def cache_meta(
    family: str, teacher: str, max_sequence_length: int, with_clip: bool, dtype: torch.dtype, tokenizer: str
) -> dict:
    """Metadata identifying what a cache holds (compared on reuse and by training): pipeline family, teacher id and
    dtype, T5 tokenizer fingerprint and token length, whether the CLIP parts are included."""
    return {
        "family": family,
        "teacher": teacher,
        "max_sequence_length": max_sequence_length,
        "with_clip": with_clip,
        "dtype": str(dtype).removeprefix("torch."),
        "tokenizer": tokenizer,
    }
