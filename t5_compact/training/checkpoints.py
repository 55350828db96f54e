"""`checkpoint-{step}` folders: written atomically, pruned only once the new one is in place, checked before resume.

A checkpoint is first written to `.tmp-checkpoint-{step}`, completed with `training_state.json` (the last file),
then renamed; only then are checkpoints beyond `checkpoints_total_limit` deleted (each loses its
`training_state.json` first, so a half-deleted one never counts as complete). A kill at any instant therefore
leaves the newest complete checkpoint of before the save, or the new one: at most one interval is lost, whatever
the limit. A killed run leaves at most a `.tmp-*` folder, which resume ignores and the next save removes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

from ..fileio import atomic_write_text
from .config import ConfigError

STATE_FILE = "training_state.json"
STUDENT_DIR = "student"
OPTIMIZER_FILE = "optimizer.bin"
RNG_PREFIX = "random_states_"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_EXACT = "resume stays exact: every step's data, noise and dropout are seeded from (seed, step), not from this state"


class DamagedCheckpointError(ConfigError):
    """A checkpoint file is truncated, unreadable or missing (the message names it)."""


def say(message: str) -> None:
    """One line on stderr, from the main process only (RANK 0 of a launch)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, file=sys.stderr, flush=True)


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run (those with `training_state.json`), oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).exists()]
    return [p for _, p in sorted(found)]


def _check_zip(path: Path) -> None:
    """`torch.save` files are zip archives whose directory sits at the end: a truncated file has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            size = path.stat().st_size
            if any(info.header_offset + info.compress_size > size for info in archive.infolist()):
                raise zipfile.BadZipFile("a member runs past the end of the file")
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise DamagedCheckpointError(f"{path}: damaged checkpoint file (truncated or corrupt: {err})") from err


def read_state(checkpoint: str | os.PathLike) -> dict:
    """The training state (step, stage, ...) saved with a checkpoint; a damaged file names itself."""
    path = Path(checkpoint) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedCheckpointError(f"{path}: damaged checkpoint file ({err})") from err
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
        raise DamagedCheckpointError(f"{path}: damaged checkpoint file (no integer 'step')")
    return state


def check_checkpoint(checkpoint: str | os.PathLike) -> dict:
    """Check every file resume needs (headers and archive directories only, so it is cheap); return the state.

    Raises `DamagedCheckpointError` naming the first damaged or missing file. The RNG files are checked by
    `damaged_rng_file` instead: they do not decide the result (see `_EXACT`).
    """
    from ..checkpoint import read_safetensors_header
    from ..errors import CheckpointError

    root = Path(checkpoint)
    state = read_state(root)
    for name in (OPTIMIZER_FILE, f"{STUDENT_DIR}/config.json"):
        if not (root / name).is_file():
            raise DamagedCheckpointError(f"{root / name}: missing from the checkpoint")
    try:
        json.loads((root / STUDENT_DIR / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedCheckpointError(f"{root / STUDENT_DIR / 'config.json'}: damaged checkpoint file ({err})") from err
    weights = sorted((root / STUDENT_DIR).glob("*.safetensors"))
    if not weights:
        raise DamagedCheckpointError(f"{root / STUDENT_DIR}: no model.safetensors in the checkpoint")
    for file in weights:
        try:
            read_safetensors_header(file)
        except CheckpointError as err:
            raise DamagedCheckpointError(f"damaged checkpoint file: {err}") from err
    for file in sorted(root.iterdir()):
        if file.suffix in (".bin", ".pkl", ".pt") and not file.name.startswith(RNG_PREFIX):
            _check_zip(file)
    return state


def damaged_rng_file(checkpoint: str | os.PathLike, process_index: int) -> str | None:
    """A one-line note if this process's saved RNG state is damaged or missing (None if it is fine)."""
    path = Path(checkpoint) / f"{RNG_PREFIX}{process_index}.pkl"
    if not path.is_file():
        return f"{path}: missing; ignored ({_EXACT})"
    try:
        _check_zip(path)
    except DamagedCheckpointError as err:
        return f"{err}; ignored ({_EXACT})"
    return None


def resolve_resume(resume: str | None, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from, checked (None: start at step 0).

    `latest`: the newest checkpoint whose files are all intact; damaged ones are skipped with a line naming the
    file, and having none yet is said in one line (not an error, so a job script can always pass `--resume latest`).
    If every checkpoint is damaged that is an error. A path: that checkpoint, which must be intact.
    """
    if not resume:
        return None
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise ConfigError(f"--resume {resume}: not a complete checkpoint folder (no {STATE_FILE})")
        check_checkpoint(path)
        return path
    found = list_checkpoints(output_dir)
    if not found:
        say(f"--resume latest: no checkpoint in {output_dir} yet; starting from step 0")
        return None
    damaged = []
    for path in reversed(found):
        try:
            check_checkpoint(path)
        except DamagedCheckpointError as err:
            damaged.append(str(err))
            say(f"--resume latest: skipping {path.name}: {err}")
            continue
        if damaged:
            say(f"--resume latest: resuming from {path}, the newest complete earlier checkpoint")
        return path
    raise ConfigError(
        f"--resume latest: every checkpoint in {output_dir} is damaged (newest: {damaged[0]}); "
        "delete them to start over"
    )


def load_checkpoint(accelerator, checkpoint: Path) -> int:
    """`accelerator.load_state` with one clear line for a damaged RNG file; returns the step to continue from."""
    note = damaged_rng_file(checkpoint, accelerator.process_index)
    quiet = logging.getLogger("accelerate.checkpointing")
    level = quiet.level
    if note:
        print(note, file=sys.stderr, flush=True)
        quiet.setLevel(logging.WARNING)  # accelerate would add only an INFO "Could not load random states"
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types for data the checks above missed
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DamagedCheckpointError(
            f"{checkpoint}: could not load the checkpoint ({type(err).__name__}: {first})"
        ) from err
    finally:
        quiet.setLevel(level)
    return read_state(checkpoint)["step"]


def _delete(checkpoint: Path) -> None:
    """Remove a checkpoint so that a kill half-way leaves a folder that no longer counts as complete."""
    (checkpoint / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(checkpoint, ignore_errors=True)


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict, limit: int | None) -> Path:
    """Save the full training state as `checkpoint-{step}`, then prune to `limit` (all processes call this)."""
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = root / f".tmp-checkpoint-{step}"
    aside = root / f".tmp-replaced-checkpoint-{step}"
    if accelerator.is_main_process:
        for stale in root.glob(".tmp-*checkpoint-*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(tmp / STATE_FILE, json.dumps(state))
        if final.exists():
            os.replace(final, aside)
        os.replace(tmp, final)
        if aside.exists():
            _delete(aside)
        if limit is not None:
            for old in list_checkpoints(root)[:-limit]:
                _delete(old)
    accelerator.wait_for_everyone()
    return final


def trim_log(path: Path, last_step: int) -> None:
    """Keep only the lines of `train_log.jsonl` up to `last_step` (the resumed step; 0 for a fresh run), dropping
    what a killed run logged after its last checkpoint and any half-written last line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
