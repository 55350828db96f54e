"""Trajectory cache: the teacher's velocities along each pooled trajectory, so training skips the teacher's passes.

Layout of `<dir>`: `index.json` (metadata + key -> [shard, row, seed, guidance]) and shards
`traj-r<rank>-<n>.safetensors`, each for one resolution, holding `noise` `[n, ...]` (float32), `velocity`
`[n, T, ...]` (the teacher's conditional velocity at every timestep) and, for classifier-free-guidance families,
`uncond_velocity` `[n, T, ...]`, in bf16 (or float32). The states `x_t` are not stored: `follow_teacher(recorded=)`
rebuilds them from the noise with the scheduler's own steps (exact with float32 records), which halves the disk.

Each process of an `accelerate launch` writes its own shards and its own `index-r<rank>.json` (replaced atomically
after every shard, so a killed run resumes); the main process merges them into `index.json` at the end. Reading
memory-maps the shards (`safe_open`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..bench.report import format_bytes
from ..fileio import atomic_write_text
from .teacher_cache import TeacherCacheError
from .trajectories import trajectory_key

FORMAT = "t5-compact-trajectory-cache"
INDEX = "index.json"
STORAGE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def trajectory_bytes(latent_numel: int, num_steps: int, storage: str, with_uncond: bool) -> int:
    """Disk bytes of one trajectory: its float32 noise plus one (two with CFG) velocity per timestep."""
    per = torch.tensor([], dtype=STORAGE_DTYPES[storage]).element_size()
    return latent_numel * (4 + num_steps * per * (2 if with_uncond else 1))


def check_disk(directory: Path, needed: int, count: int) -> str:
    """One line on the space `count` trajectories need; raises `TeacherCacheError` if the disk lacks it."""
    probe = directory if directory.exists() else next(p for p in directory.parents if p.exists())
    free = shutil.disk_usage(probe).free
    line = f"{directory}: {count} trajectories to write, {format_bytes(needed)} needed, {format_bytes(free)} free"
    if needed > free:
        raise TeacherCacheError(line + "; free space or write the cache elsewhere (trajectory_cache)")
    return line


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TeacherCacheError(f"{path}: unreadable trajectory index ({err}); delete the folder to rebuild") from err


def rank_index_path(directory: Path, rank: int) -> Path:
    return directory / f"index-r{rank}.json"


def done_keys(directory: Path) -> set[str]:
    """Keys of every trajectory already written, by any process (the merged index and every partial one)."""
    keys: set[str] = set()
    for path in [directory / INDEX, *sorted(directory.glob("index-r*.json"))]:
        if path.is_file():
            keys.update(_read_json(path)["entries"])
    return keys


def _check_meta(path: Path, cached: dict, meta: dict) -> None:
    """Raise `TeacherCacheError` where `cached` differs from `meta` on any of `meta`'s keys."""
    wrong = {k: (cached.get(k), v) for k, v in meta.items() if cached.get(k) != v}
    if wrong:
        raise TeacherCacheError(
            f"{path}: trajectory cache made for another setup (cached vs wanted: {wrong}); use another folder"
        )


def write_trajectories(
    directory: str | os.PathLike,
    entries: Sequence[tuple[str, int, int]],
    compute: Callable[[list[tuple[str, int, int]]], dict[str, torch.Tensor]],
    meta: dict,
    *,
    rank: int = 0,
    batch_size: int = 4,
    shard_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Compute (`compute(chunk)` -> `noise`, `velocity`, optionally `uncond_velocity`, and `guidance`, `seed`
    lists) and write the `entries` (prompt, resolution, index) given to this process; returns how many were added.

    Entries are grouped by resolution; one shard per `shard_size` entries. Raises `TeacherCacheError` if the folder
    holds a cache made with other metadata."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for path in [directory / INDEX, *directory.glob("index-r*.json")]:
        if path.is_file():
            _check_meta(path, _read_json(path).get("meta", {}), meta)
    index_path = rank_index_path(directory, rank)
    index = _read_json(index_path) if index_path.is_file() else {"format": FORMAT, "meta": meta, "entries": {}}
    shard_number = len({location[0] for location in index["entries"].values()})
    added = 0
    for res in sorted({e[1] for e in entries}):
        todo = [e for e in entries if e[1] == res]
        for start in range(0, len(todo), shard_size):
            chunk = todo[start : start + shard_size]
            parts: dict[str, list[torch.Tensor]] = {}
            seeds, guidance = [], []
            for b in range(0, len(chunk), batch_size):
                out = compute(chunk[b : b + batch_size])
                seeds += out.pop("seed")
                guidance += out.pop("guidance")
                for name, tensor in out.items():
                    parts.setdefault(name, []).append(tensor.cpu())
                if progress is not None:
                    progress(len(chunk[b : b + batch_size]))
            name = f"traj-r{rank}-{shard_number:05d}.safetensors"
            tensors = {k: torch.cat(v).contiguous() for k, v in parts.items()}
            tmp = directory / (name + ".tmp")
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
            os.replace(tmp, directory / name)
            for row, (entry, s, g) in enumerate(zip(chunk, seeds, guidance, strict=True)):
                index["entries"][trajectory_key(*entry)] = [name, row, s, g]
            atomic_write_text(index_path, json.dumps(index))
            shard_number += 1
            added += len(chunk)
    return added


def merge_indices(directory: str | os.PathLike, meta: dict) -> int:
    """Merge the per-process indices into `index.json` (main process, after every process finished)."""
    directory = Path(directory)
    merged = {"format": FORMAT, "meta": meta, "entries": {}}
    if (directory / INDEX).is_file():
        merged["entries"].update(_read_json(directory / INDEX)["entries"])
    for path in sorted(directory.glob("index-r*.json")):
        merged["entries"].update(_read_json(path)["entries"])
    atomic_write_text(directory / INDEX, json.dumps(merged))
    for path in directory.glob("index-r*.json"):
        path.unlink()
    return len(merged["entries"])


class TrajectoryCache:
    """Read-only, memory-mapped access to a trajectory cache folder."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        path = self.directory / INDEX
        if not path.is_file():
            partial = " (a run was interrupted: rerun `t5-compact cache-teacher`, it resumes)"
            has_partial = any(self.directory.glob("index-r*.json")) if self.directory.is_dir() else False
            raise TeacherCacheError(
                f"{self.directory}: no {INDEX}{partial if has_partial else ''}; "
                "build it with `t5-compact cache-teacher --trajectory_cache DIR --trajectories N`"
            )
        self.index = _read_json(path)
        if self.index.get("format") != FORMAT:
            raise TeacherCacheError(f"{path}: not a t5-compact trajectory cache")
        self.meta: dict = self.index["meta"]
        self.entries: dict[str, list] = self.index["entries"]
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def check(self, expected: dict, entries: Sequence[tuple[str, int, int]] = ()) -> None:
        """Raise `TeacherCacheError` if the metadata differs from `expected` or some trajectories are missing."""
        _check_meta(self.directory, self.meta, expected)
        missing = [e for e in entries if trajectory_key(*e) not in self.entries]
        if missing:
            prompt, res, j = missing[0]
            raise TeacherCacheError(
                f"{self.directory}: {len(missing)} trajectory(ies) not cached, e.g. {prompt[:60]!r} at {res} px "
                f"(index {j}); rerun `t5-compact cache-teacher` with this config (it resumes)"
            )

    def _handle(self, shard: str):
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.directory / shard), framework="pt")
        return self._handles[shard]

    def get(
        self, prompts: Sequence[str], resolution: int, indices: Sequence[int]
    ) -> tuple[torch.Tensor, list[float], list[tuple[torch.Tensor, torch.Tensor | None]]]:
        """(noise `[B, ...]`, guidance per sample, per timestep `(v_c, v_u or None)` `[B, ...]`) of the samples'
        trajectories, stacked in batch order (float32 noise; velocities in their storage dtype)."""
        noise, guidance, velocity, uncond = [], [], [], []
        for prompt, j in zip(prompts, indices, strict=True):
            location = self.entries.get(trajectory_key(prompt, resolution, j))
            if location is None:
                raise TeacherCacheError(f"{self.directory}: trajectory not cached: {prompt[:60]!r} ({resolution} px)")
            shard, row, _, g = location
            handle = self._handle(shard)
            noise.append(handle.get_slice("noise")[row : row + 1])
            velocity.append(handle.get_slice("velocity")[row])
            if "uncond_velocity" in handle.keys():
                uncond.append(handle.get_slice("uncond_velocity")[row])
            guidance.append(g)
        v = torch.stack(velocity, dim=1)  # [T, B, ...]
        u = torch.stack(uncond, dim=1) if uncond else None
        recorded = [(v[i], None if u is None else u[i]) for i in range(v.shape[0])]
        return torch.cat(noise), guidance, recorded
