"""docs/supported_pipelines.md is the table rendered from what the tests exercise, and covers every ComfyUI type."""

from __future__ import annotations

import re
from pathlib import Path

from comfyui_nodes import logic
from t5_compact.support import COMFYUI, UNTESTED_ROWS, render
from t5_compact.tiny_pipelines import TINY_PIPELINES

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "supported_pipelines.md"


def test_docs_table_is_the_rendered_one():
    assert DOC.read_text() == render(), "regenerate: python -m t5_compact.support > docs/supported_pipelines.md"


def test_readme_shows_the_rendered_table():
    rendered = render()
    table = rendered[rendered.index("| diffusers pipeline") :].strip()
    assert table in (ROOT / "README.md").read_text(), "paste the table of docs/supported_pipelines.md into README.md"


def test_table_rows_are_the_tested_pipelines_and_every_comfyui_t5_only_type():
    text = DOC.read_text()
    for name in TINY_PIPELINES:
        assert f"| `{name}` |" in text and name in COMFYUI
    assert not set(UNTESTED_ROWS) & set(TINY_PIPELINES)
    types = {m.split(",")[0] for v in COMFYUI.values() for m in re.findall(r"\(([^)]*)\)", v)}
    assert types == set(logic.T5_ONLY_TYPES)
