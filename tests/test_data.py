"""Prompt files, sources, stages and the deterministic per-step batch schedule."""

from __future__ import annotations

import json

import pytest

from t5_compact.training.config import ConfigError, TrainConfig
from t5_compact.training.data import PromptSchedule, Source, Stage, load_heldout, load_stages, read_prompts


def test_read_prompts_all_formats(tmp_path):
    (tmp_path / "a.txt").write_text("a red cat\n\n  two dogs  \n")
    (tmp_path / "b.jsonl").write_text('"plain string"\n{"prompt": "an object"}\n\n{"text": "text key"}\n')
    (tmp_path / "c.json").write_text(json.dumps(["x one", {"caption": "x two"}]))
    (tmp_path / "d.json").write_text(json.dumps({"color": ["c1", "c2"], "shape": ["s1"]}))
    (tmp_path / "e.csv").write_text('id,prompt\n1,"a sign that says ""hi"", ok"\n2,second\n')
    (tmp_path / "f.csv").write_text("caption,x\nfirst,1\n")
    assert read_prompts(tmp_path / "a.txt") == ["a red cat", "two dogs"]
    assert read_prompts(tmp_path / "b.jsonl") == ["plain string", "an object", "text key"]
    assert read_prompts(tmp_path / "c.json") == ["x one", "x two"]
    assert read_prompts(tmp_path / "d.json") == ["c1", "c2", "s1"]
    assert read_prompts(tmp_path / "e.csv") == ['a sign that says "hi", ok', "second"]
    assert read_prompts(tmp_path / "f.csv") == ["first"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "not found"),
        ("empty.txt", b"", "no prompts"),
        ("blank.txt", b"\n  \n", "no prompts"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "not a text file"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not a UTF-8 text file"),
        ("bad.json", b"[1, 2", "invalid JSON"),
        ("numbers.json", b"[1, 2]", "not a prompt string"),
        ("string.json", b'"a red cat"', "expected a JSON list of prompts .* got a string"),
        ("number.json", b"42", "got a number"),
        ("null.json", b"null", "got null"),
        ("flag.json", b"true", "got a boolean"),
        ("mixed.json", b'{"color": ["c1"], "shape": "s1"}', "got an object whose values are not all lists"),
        ("number.jsonl", b'"ok"\n42\n', "entry '42' is not a prompt string"),
        ("nocol.csv", b"id,score\n1,2\n", "no prompt column"),
        ("prompts.parquet", b"PAR1", "unsupported prompt file type"),
    ],
)
def test_bad_prompt_files_raise_config_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        read_prompts(path)
    assert name in str(err.value)


def _stages():
    a = Source("semantics", [f"s{i}" for i in range(10)], 1.0)
    b = Source("text", [f"t{i}" for i in range(10)], 3.0)
    return [Stage("one", [a], 3, 32), Stage("two", [a, b], 5, 48)]


def test_schedule_is_a_pure_function_of_step_and_rank():
    stages = _stages()
    schedule = PromptSchedule(stages, 4, [2.0, 3.0, 4.0], seed=1)
    again = PromptSchedule(_stages(), 4, [2.0, 3.0, 4.0], seed=1)
    assert [schedule.batch(s).prompts for s in range(8)] == [again.batch(s).prompts for s in range(8)]
    assert schedule.batch(5, rank=0).prompts != schedule.batch(5, rank=1).prompts
    assert [schedule.stage_of(s) for s in range(9)] == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert schedule.batch(2).resolution == 32 and schedule.batch(3).resolution == 48
    assert set(schedule.batch(0).categories) == {"semantics"}
    assert {schedule.batch(s).guidance for s in range(40)} == {2.0, 3.0, 4.0}
    short = schedule.batch(4, batch_size=3)
    assert len(short.prompts) == len(short.categories) == 3


def test_source_weights_are_respected():
    schedule = PromptSchedule(_stages(), 64, [3.5], seed=0)
    categories = [c for s in range(3, 8) for c in schedule.batch(s).categories]
    share = categories.count("text") / len(categories)
    assert 0.65 < share < 0.85  # weight 3 : 1


def test_stages_from_config_and_heldout_reserved(tmp_path):
    (tmp_path / "sem.txt").write_text("\n".join(f"semantic prompt {i}" for i in range(12)))
    config = TrainConfig(
        stages=[{"name": "a", "steps": 2, "sources": [{"path": str(tmp_path / "sem.txt"), "category": "sem"}]}],
        heldout_count=3,
    )
    stages = load_stages(config)
    heldout = load_heldout(config, stages)
    assert heldout == {"sem": ["semantic prompt 9", "semantic prompt 10", "semantic prompt 11"]}
    assert len(stages[0].sources[0].prompts) == 9 and stages[0].resolution == config.resolution
    assert not set(heldout["sem"]) & set(stages[0].sources[0].prompts)
