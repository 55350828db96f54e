"""Export a student for sharing: its `save_pretrained` folder, an optional ComfyUI single file, its recorded training
(`training_info.json`) and a model card, optionally pushed to the Hugging Face hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

INFO_FILE = "training_info.json"


class PublishError(RuntimeError):
    """The export cannot be published (offline, no token, bad repo id, hub refused) or its inputs are unusable."""


def read_training_info(source: str | Path) -> dict[str, Any] | None:
    """`training_info.json` of a local student folder (or of a single file's folder); None if absent or unreadable."""
    path = Path(source)
    info = (path if path.is_dir() else path.parent) / INFO_FILE
    if not path.exists() or not info.is_file():  # a hub id is not a local folder
        return None
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_bench(path: str | Path) -> dict[str, Any]:
    """A `t5-compact bench` result (`bench.json`); a `PublishError` naming the file if it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PublishError(f"{path}: not a readable bench.json ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("encoders"), list):
        raise PublishError(f"{path}: not a `t5-compact bench` result (no 'encoders' list)")
    return data


def check_hub_access(repo_id: str) -> None:
    """Raise a one-line `PublishError` before anything remote when the push cannot work: bad id, offline, no token."""
    from huggingface_hub import get_token

    from .sources import is_offline

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--push-to-hub {repo_id!r}: expected OWNER/NAME")
    if is_offline():
        raise PublishError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set; unset it to publish")
    if not get_token():
        raise PublishError(f"--push-to-hub {repo_id}: no Hugging Face token; run `hf auth login` or set HF_TOKEN")


def write_card(
    model,
    folder: Path,
    *,
    repo_id: str | None = None,
    info: dict[str, Any] | None = None,
    bench: dict[str, Any] | None = None,
    comfyui_file: str | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Write `folder/README.md`, the model card (`info` defaults to the folder's `training_info.json`)."""
    from .model_card import render_card

    info = info if info is not None else read_training_info(folder)
    params = sum(p.numel() for p in model.parameters())
    card = render_card(repo_id or str(folder), model.config.to_dict(), params, info, bench, comfyui_file, license)
    path = Path(folder) / "README.md"
    card.save(path)
    return path


def export(
    student: str | Path,
    out: str | Path,
    *,
    comfyui: bool = False,
    bench: str | Path | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    license: str = "apache-2.0",
    overwrite: bool = False,
) -> Path:
    """Write the export folder `out` for `student` (any source `T5CompactEncoder.from_pretrained` takes) and push
    it to `push_to_hub` (OWNER/NAME) if given. Every check that can fail runs before anything is written."""
    out = Path(out)
    if push_to_hub:
        check_hub_access(push_to_hub)
    bench_data = read_bench(bench) if bench else None
    source = Path(student).expanduser()
    if source.exists() and out.exists() and (out.resolve() == source.resolve() or out.resolve() in source.parents):
        raise FileExistsError(f"{out}: this is (or holds) the student itself; export to another folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out}: already exists and is not empty; pass --overwrite to replace it")

    from .convert import save_comfyui, save_folder
    from .modeling_t5_compact import T5CompactEncoder

    model = T5CompactEncoder.from_pretrained(student).eval()
    info = read_training_info(student)
    if out.exists() and overwrite:
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    save_folder(model, out)
    if info is not None:
        (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    comfyui_file = None
    if comfyui:
        comfyui_file = f"{(push_to_hub or out.resolve().as_posix()).rsplit('/', 1)[-1]}-comfyui.safetensors"
        save_comfyui(model, out / comfyui_file)
    card = dict(repo_id=push_to_hub, info=info, bench=bench_data, comfyui_file=comfyui_file, license=license)
    write_card(model, out, **card)
    if push_to_hub:
        upload(out, push_to_hub, private)
    return out


def upload(folder: Path, repo_id: str, private: bool) -> str:
    """`create_repo` + `upload_folder`; hub failures become a one-line `PublishError`."""
    from huggingface_hub import create_repo, upload_folder
    from huggingface_hub.errors import HfHubHTTPError

    try:
        url = create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload compact T5 (t5-compact)")
    except (HfHubHTTPError, OSError) as err:
        raise PublishError(f"--push-to-hub {repo_id}: the hub refused the upload ({err})".splitlines()[0]) from err
    return str(url)
