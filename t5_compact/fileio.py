"""Small file helpers: atomic text writes and permissions that follow the umask (standard library only)."""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give `path` (and, for a folder, everything inside) the permissions a plain `open`/`mkdir` would have given:
    0666/0777 minus the umask. Temp-file writers create 0600/0700, which other users and services cannot read."""
    mask = umask()
    path = Path(path)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through `path.partial` and a rename: readers see the old or the new file, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
