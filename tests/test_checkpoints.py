"""Checkpoints survive a kill at any instant, damaged files are named and skipped, and the log has no stale lines."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from t5_compact.tiny import tiny_compact_encoder
from t5_compact.training.checkpoints import (
    DamagedCheckpointError,
    check_checkpoint,
    list_checkpoints,
    read_state,
    resolve_resume,
    save_checkpoint,
    trim_log,
)
from t5_compact.training.config import ConfigError
from t5_compact.training.loop import _register_hooks

pytestmark = pytest.mark.usefixtures("single_thread_fresh_accelerate")


class Killed(BaseException):
    """A simulated SIGKILL: raised from a file operation; from then on no file operation happens."""


@pytest.fixture
def accelerator():
    """A real Accelerator holding a tiny student, its optimizer and an LR scheduler (as the training loop does)."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    student = tiny_compact_encoder()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    student, optimizer = acc.prepare(student, optimizer)
    acc.register_for_checkpointing(LambdaLR(optimizer, lambda _: 1.0))
    _register_hooks(acc, student)
    return acc


def save(acc, root: Path, step: int, limit: int | None) -> Path:
    return save_checkpoint(acc, root, step, {"step": step, "stage": 0, "loss": 0.5}, limit)


def kill_at(monkeypatch, instant: int) -> list[int]:
    """Make the `instant`-th file operation (write, rename, delete) and every later one raise `Killed`."""
    count = [0]

    def wrap(func):
        def op(*args, **kwargs):
            count[0] += 1
            if count[0] > instant:
                raise Killed
            return func(*args, **kwargs)

        return op

    for name in ("replace", "rename", "unlink", "rmdir", "remove", "makedirs", "mkdir"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    monkeypatch.setattr(torch, "save", wrap(torch.save))
    return count


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_a_kill_at_any_instant_of_a_save_loses_at_most_one_interval(accelerator, tmp_path, monkeypatch, limit):
    template = tmp_path / "template"
    for step in (2, 4):
        save(accelerator, template, step, limit)
    instant, completed = 0, False
    while not completed:
        root = tmp_path / f"kill-{instant}"
        shutil.copytree(template, root)
        with monkeypatch.context() as patch:
            count = kill_at(patch, instant)
            try:
                save(accelerator, root, 6, limit)
                completed = True
            except Killed:
                pass
        assert count[0] > 0
        latest = resolve_resume("latest", root)
        assert latest is not None, f"no checkpoint left after a kill at file operation {instant}"
        assert check_checkpoint(latest)["step"] >= 4, instant  # at most one interval lost
        assert len(list_checkpoints(root)) <= limit + 1
        instant += 1
    assert instant > 10  # the save really has that many instants to be killed at
    assert [read_state(p)["step"] for p in list_checkpoints(root)] == [2, 4, 6][-limit:]
    assert not list(root.glob(".tmp-*"))


@pytest.mark.parametrize(
    "name", ["optimizer.bin", "training_state.json", "custom_checkpoint_0.pkl", "student/model.safetensors"]
)
def test_a_damaged_checkpoint_file_is_named_and_latest_falls_back(accelerator, tmp_path, capsys, name):
    for step in (2, 4):
        save(accelerator, tmp_path, step, None)
    damaged = tmp_path / "checkpoint-4" / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.raises(DamagedCheckpointError, match=str(damaged)):
        resolve_resume(str(tmp_path / "checkpoint-4"), tmp_path)
    capsys.readouterr()
    assert resolve_resume("latest", tmp_path) == tmp_path / "checkpoint-2"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and str(damaged) in lines[0] and "checkpoint-2" in lines[1], lines
    damaged_too = tmp_path / "checkpoint-2" / name
    damaged_too.write_bytes(b"")
    with pytest.raises(ConfigError, match="every checkpoint .* is damaged"):
        resolve_resume("latest", tmp_path)


def test_resume_latest_with_nothing_to_resume_says_so(tmp_path, capsys):
    assert resolve_resume("latest", tmp_path / "new-run") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"--resume latest: no checkpoint in {tmp_path / 'new-run'} yet; starting from step 0"]


def test_trim_log_drops_stale_and_half_written_lines(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)) + '{"step": 8, "lo')
    trim_log(log, 5)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    trim_log(log, 0)
    assert log.read_text() == ""


def tiny_run(tmp_path: Path, output_dir: Path, *flags: str) -> int:
    """`t5-compact train` in-process on the tiny FLUX pipeline: 6 steps, a checkpoint every 2."""
    from t5_compact.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(
        "pretrained_model: tiny:flux\ninit_from: tiny\nnum_inference_steps: 2\nmax_sequence_length: 12\n"
        "resolution: 16\ntrain_batch_size: 2\nlearning_rate: 3.0e-3\nmax_train_steps: 6\ncheckpointing_steps: 2\n"
        "sources: [{prompts: [a red cat, a blue dog, a green car, two cups], category: quality}]\n"
        "heldout: {quality: ['a blue dog on a car']}\nreport_to: none\n"
    )
    return main(["train", "--config", str(config), "--output_dir", str(output_dir), "--no-tqdm", *flags])


def test_damaged_rng_file_is_named_and_resume_stays_exact(tmp_path, capsys, caplog):
    from t5_compact.modeling_t5_compact import T5CompactEncoder

    assert tiny_run(tmp_path, tmp_path / "straight") == 0
    split = tmp_path / "split"
    shutil.copytree(tmp_path / "straight" / "checkpoint-2", split / "checkpoint-2")
    rng = split / "checkpoint-2" / "random_states_0.pkl"
    rng.write_bytes(rng.read_bytes()[:100])
    capsys.readouterr()
    assert tiny_run(tmp_path, split, "--resume", "latest") == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "random_states_0.pkl" in line]
    assert len(notes) == 1 and "damaged" in notes[0] and "resume stays exact" in notes[0], err
    assert "Could not load random states" not in caplog.text
    a = T5CompactEncoder.from_pretrained(tmp_path / "straight" / "student")
    b = T5CompactEncoder.from_pretrained(split / "student")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_train_resume_latest_skips_a_damaged_checkpoint_and_keeps_the_log_clean(tmp_path, capsys):
    out = tmp_path / "run"
    assert tiny_run(tmp_path, out) == 0
    shutil.rmtree(out / "student")
    for step in (6,):  # as if killed after step 5 logged, with checkpoint-4 ... and a damaged checkpoint-6
        (out / f"checkpoint-{step}" / "optimizer.bin").write_bytes(b"PK\x03\x04")
    capsys.readouterr()
    assert tiny_run(tmp_path, out, "--resume", "latest") == 0
    err = capsys.readouterr().err
    assert f"skipping checkpoint-6: {out / 'checkpoint-6' / 'optimizer.bin'}" in err
    assert f"resuming from {out / 'checkpoint-4'}" in err and "Traceback" not in err
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert len(json.loads((out / "heldout.json").read_text())) == 2  # start and end, no repeats


def test_train_reports_a_damaged_resume_path_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert tiny_run(tmp_path, out) == 0
    (out / "checkpoint-4" / "training_state.json").write_text('{"step": ')
    capsys.readouterr()
    assert tiny_run(tmp_path, tmp_path / "again", "--resume", str(out / "checkpoint-4")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("t5-compact train: error: ") and "training_state.json" in err[0]


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    from t5_compact.fileio import atomic_write_text

    path = tmp_path / "heldout.json"
    atomic_write_text(path, "[1]")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "[1, 2]")
    assert path.read_text() == "[1]" and sorted(p.name for p in tmp_path.iterdir()) == ["heldout.json"]


def test_stop_signals_are_deferred_only_inside_the_training_steps(capsys):
    import signal

    from accelerate import Accelerator

    from t5_compact.training import interrupt

    acc = Accelerator(cpu=True)
    with interrupt.graceful_stop():
        with pytest.raises(KeyboardInterrupt):  # models loading: quit at once
            os.kill(os.getpid(), signal.SIGINT)
        interrupt.arm()
        assert not interrupt.stop_requested(acc)
        os.kill(os.getpid(), signal.SIGINT)  # first Ctrl-C: finish the step, then save
        assert interrupt.stop_requested(acc) and "finishing this step" in capsys.readouterr().err
        os.kill(os.getpid(), signal.SIGTERM)  # a launcher's follow-up SIGTERM does not abort the save
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and not interrupt.stop_requested(acc)
