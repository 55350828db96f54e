"""Bad configs and prompt files fail with a clear message before any model is loaded."""

from __future__ import annotations

import pytest

from t5_compact.cli import main as cli_main

GOOD_PROMPTS = "a red cat\na blue dog\n"


def write_config(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def config_text(prompt_path: str, extra: str = "") -> str:
    # A pipeline path that does not exist: if it were loaded first, the error would be about it instead.
    return (
        "pretrained_model: /nonexistent/flux-pipeline\n"
        "output_dir: out\n"
        f"sources:\n  - {{path: {prompt_path}, category: quality}}\n" + extra
    )


def run_cli(args, capsys) -> str:
    assert cli_main(["train", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("t5-compact train: error:"), err
    return err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "config file not found"),
        (b"", "config file is empty"),
        (b"\xff\xfe\x00garbage\x00", "not a text file"),
        (b"- just\n- a list\n", "must be a mapping"),
        (b"key: [unclosed\n", "cannot parse config"),
    ],
)
def test_bad_config_files(tmp_path, capsys, content, message):
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_bytes(content)
    err = run_cli(["--config", path], capsys)
    assert message in err and "config.yaml" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("learning_rat: 0.1\n", "unknown config key(s) ['learning_rat']"),
        ("learning_rate: fast\n", "'learning_rate' must be a float"),
        ("mixed_precision: fp8\n", "'mixed_precision' must be one of"),
        ("gradient_checkpointing: 1\n", "must be true or false"),
        ("stages: [{steps: 3, sources: [{prompts: [a]}]}]\n", "either `sources` (one stage) or `stages`"),
        ("guidance_range: [5.0, 2.0]\n", "guidance_range must be [min, max]"),
    ],
)
def test_bad_config_values(tmp_path, capsys, extra, message):
    (tmp_path / "p.txt").write_text(GOOD_PROMPTS)
    err = run_cli(["--config", write_config(tmp_path, config_text(str(tmp_path / "p.txt"), extra))], capsys)
    assert message in err


def test_bad_stage_entries(tmp_path, capsys):
    stages = "stages:\n  - {name: s, steps: 0, sources: [{prompts: [a]}]}\n"
    path = write_config(tmp_path, "pretrained_model: /nonexistent\n" + stages)
    assert "`steps` must be a positive integer" in run_cli(["--config", path], capsys)
    stages = "stages:\n  - {name: s, steps: 2, sources: [{path: x.txt, colour: red}]}\n"
    path = write_config(tmp_path, "pretrained_model: /nonexistent\n" + stages)
    assert "unknown key(s) ['colour']" in run_cli(["--config", path], capsys)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "prompt file not found"),
        ("empty.txt", b"", "no prompts in file"),
        ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
        ("prompts.jsonl", b'{"prompt": "ok"}\n{"prompt": \n', "invalid JSON"),
    ],
)
def test_bad_prompt_files_fail_before_models_load(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    err = run_cli(["--config", write_config(tmp_path, config_text(str(path)))], capsys)
    assert message in err and name in err
    assert "nonexistent" not in err  # the pipeline was not touched


def test_bad_heldout_file_and_cli_override(tmp_path, capsys):
    (tmp_path / "p.txt").write_text(GOOD_PROMPTS)
    (tmp_path / "empty.txt").write_text("")
    config = write_config(tmp_path, config_text(str(tmp_path / "p.txt"), f"heldout: {{text: {tmp_path}/empty.txt}}\n"))
    assert "empty.txt: no prompts in file" in run_cli(["--config", config], capsys)
    # a CLI flag overrides the file: here with a prompt file that does not exist
    config = write_config(tmp_path, config_text(str(tmp_path / "p.txt")))
    err = run_cli(["--config", config, "--sources", tmp_path / "nope.txt"], capsys)
    assert "nope.txt: prompt file not found" in err


def test_missing_teacher_cache_fails_before_models_load(tmp_path, capsys):
    (tmp_path / "p.txt").write_text(GOOD_PROMPTS)
    config = write_config(tmp_path, config_text(str(tmp_path / "p.txt"), f"teacher_cache: {tmp_path}/cache\n"))
    err = run_cli(["--config", config], capsys)
    assert "no index.json; run `t5-compact cache-teacher` first" in err
