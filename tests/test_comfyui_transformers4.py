"""The node pack's header-only path on ComfyUI's transformers floor, checked without ComfyUI or transformers 4.

A child process is told transformers is 4.57.3 and has `transformers` / `huggingface_hub.dataclasses` blocked, so
any import of a transformers-5-only part fails there. The real transformers-4 run inside ComfyUI is
`tests/test_comfyui_integration.py::test_pack_on_transformers_4`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t5_compact import compact_config, geometry
from t5_compact.compat import has_transformers_5, require_transformers_5
from t5_compact.convert import save_comfyui
from t5_compact.loading import expected_shapes
from t5_compact.tiny import tiny_compact_encoder

ROOT = Path(__file__).resolve().parents[1]

AS_TRANSFORMERS_4 = """
import importlib.metadata, sys
real_version = importlib.metadata.version
importlib.metadata.version = lambda name: "4.57.3" if name == "transformers" else real_version(name)
sys.modules["transformers"] = None  # every import of transformers fails from here on
sys.modules["huggingface_hub.dataclasses"] = None  # hub < 1.0 has no strict dataclasses
from comfyui_nodes.loader import load_compact_file
from t5_compact.errors import NotACompactEncoderError
info = load_compact_file(sys.argv[1], expected_width=4096, family="FLUX.1")
print("loaded", info.config["d_model"], info.config["projection_act"], info.parameters, len(info.state_dict))
try:
    load_compact_file(sys.argv[2])
except NotACompactEncoderError as err:
    print("wrong file:", err)
try:
    from t5_compact import T5CompactEncoder
except ImportError as err:
    print("model class:", err)
"""


def test_node_path_needs_no_transformers(tmp_path: Path) -> None:
    encoder = tiny_compact_encoder(out_dim=4096, projection_act="silu")
    save_comfyui(encoder, tmp_path / "tiny.safetensors", "fp16")
    from safetensors.torch import save_file

    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 8)}, str(tmp_path / "clip.safetensors"))
    args = [str(tmp_path / "tiny.safetensors"), str(tmp_path / "clip.safetensors")]
    result = subprocess.run(
        [sys.executable, "-c", AS_TRANSFORMERS_4, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    params = sum(p.numel() for p in encoder.parameters())
    assert f"loaded {encoder.config.d_model} silu {params} {len(encoder.state_dict()) - 1}" in lines
    wrong = next(line for line in lines if line.startswith("wrong file:"))
    assert "clip.safetensors" in wrong and "CLIP" in wrong
    needs = next(line for line in lines if line.startswith("model class:"))
    assert needs == (
        "model class: t5_compact.T5CompactEncoder needs transformers>=5.0 (this environment has 4.57.3): "
        "pip install 'transformers>=5.0'; the ComfyUI nodes work without it"
    )


def test_require_transformers_5_passes_here() -> None:
    assert has_transformers_5()
    require_transformers_5("anything")  # no error on transformers 5


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"feed_forward_proj": "relu", "projection_bias": True},
        {"num_layers": 3, "relative_attention_num_buckets": 16, "projection_out_dim": 2048},
    ],
)
def test_geometry_shapes_equal_the_model(overrides: dict) -> None:
    config = compact_config("small", **overrides)
    assert geometry.expected_shapes(config.to_dict()) == expected_shapes(config)


def test_field_defaults_are_the_config_defaults() -> None:
    config = compact_config("base")
    assert {k: getattr(config, k) for k in geometry.FIELD_DEFAULTS} == geometry.FIELD_DEFAULTS


def test_requirements_never_upgrade_a_comfyui_environment() -> None:
    """ComfyUI-Manager installs requirements.txt into ComfyUI's venv: nothing there may move transformers/hub."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line] == []


def test_example_graphs_use_the_readme_file_name() -> None:
    for name in ("flux_compact", "sd3_compact"):
        graph = json.loads((ROOT / "examples" / "comfyui" / f"{name}.json").read_text())
        names = [n["inputs"]["compact_t5"] for n in graph.values() if "compact_t5" in n["inputs"]]
        assert names == ["distill_t5_base.safetensors"]


def test_cli_on_transformers_4_names_the_version_in_one_line(monkeypatch, capsys) -> None:
    import t5_compact.compat
    from t5_compact.cli import main

    monkeypatch.setattr(t5_compact.compat, "transformers_version", lambda: "4.57.3")
    assert main(["export", "student", "out"]) == 2
    assert capsys.readouterr().err == (
        "t5-compact export: error: t5-compact export needs transformers>=5.0 (this environment has 4.57.3): "
        "pip install 'transformers>=5.0'; the ComfyUI nodes work without it\n"
    )
