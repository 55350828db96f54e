"""Resolve a compact-encoder source to a local file or folder: local paths first, then hub repo ids (cache offline)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import EncoderNotFoundError

TORCH_SUFFIXES = (".bin", ".pt", ".pth")
WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)
# A hub repo id: `owner/name`, letters, digits, `-`, `_`, `.` (what huggingface_hub validates, minus length).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def is_offline() -> bool:
    """Whether `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set now, or was when huggingface_hub was imported."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().lower() in {"1", "true", "yes", "on"}


def looks_like_repo_id(text: str) -> bool:
    """True for `owner/name` strings that could be hub repo ids (and not file names or relative paths)."""
    return (
        bool(_REPO_ID.match(text))
        and ".." not in text
        and "--" not in text
        and not text.endswith((*WEIGHT_SUFFIXES, ".json"))
    )


def resolve_source(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    subfolder: str | None = None,
) -> Path:
    """A local file or folder for `source`; hub repo ids are downloaded, or read from the cache when offline.

    An existing local path always wins; otherwise a string `owner/name` is a hub repo id (unless `owner` is a local
    folder: then it is a missing path). With `HF_HUB_OFFLINE=1` (checked at call time) or `local_files_only=True` only
    the local Hugging Face cache is consulted.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if subfolder:
        path = path / subfolder
    if path.exists():
        return path
    # A Path object, or `owner/name` whose `owner` is a local folder, is meant as a path: never ask the hub.
    local_intent = not isinstance(source, str) or Path(text.split("/", 1)[0]).is_dir()
    if local_intent or not looks_like_repo_id(text):
        raise EncoderNotFoundError(
            f"{path if subfolder else text}: no such file or folder; expected a compact encoder folder "
            "(config.json + model.safetensors), a .safetensors file, or a hub repo id such as 'LifuWang/DistillT5'"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = is_offline()
    patterns = ["*.json", "*.safetensors"]
    if subfolder:
        patterns = [f"{subfolder}/{p}" for p in patterns]
    try:
        folder = snapshot_download(
            text,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only or offline,
            allow_patterns=patterns,
        )
    except LocalEntryNotFoundError as err:
        if offline:
            why = "HF_HUB_OFFLINE is set"
        elif local_files_only:
            why = "local_files_only=True"
        else:
            why = "the hub could not be reached"
        raise EncoderNotFoundError(
            f"{text}: not a local path, and the hub repo is not in the local Hugging Face cache"
            f"{f' ({cache_dir})' if cache_dir else ''} while {why}; download it once online "
            f"(`hf download {text}`) or pass a local folder or .safetensors file"
        ) from err
    except RevisionNotFoundError as err:
        raise EncoderNotFoundError(f"{text}: the hub repo has no revision {revision!r}") from err
    except RepositoryNotFoundError as err:
        raise EncoderNotFoundError(
            f"{text}: not a local path, and no such repo on the Hugging Face Hub (or it is private/gated: log in "
            "with `hf auth login`)"
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise EncoderNotFoundError(f"{text}: could not download from the Hugging Face Hub: {err}") from err
    path = Path(folder) / subfolder if subfolder else Path(folder)
    if not path.exists():
        raise EncoderNotFoundError(f"{text}: the hub repo has no folder {subfolder!r}")
    return path
