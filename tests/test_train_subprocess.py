"""The real command line: a 2-process `accelerate launch --cpu` run, and a run killed with SIGKILL that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from t5_compact.modeling_t5_compact import T5CompactEncoder

PROMPTS = [
    "two red cats and three blue dogs",
    "a green car left of a yellow house",
    "a black cup below a book",
    "a panda holding a sign that says 'hello'",
    "a sign that says 'blue house'",
    "a man with a red cup",
]


def write_config(tmp_path: Path, steps: int, checkpointing_steps: int) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        "pretrained_model: tiny:flux\ninit_from: tiny\nnum_inference_steps: 2\nmax_sequence_length: 12\n"
        f"resolution: 16\ntrain_batch_size: 2\nlearning_rate: 3.0e-3\nmax_train_steps: {steps}\n"
        f"checkpointing_steps: {checkpointing_steps}\ncheckpoints_total_limit: 3\n"
        f"sources: [{{prompts: {json.dumps(PROMPTS)}, category: quality}}]\n"
        "heldout: {quality: ['a blue dog on a car']}\noutput_dir: out\n"
    )
    return config


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.parametrize(
    ("launcher", "ranks"),
    [
        # accelerate 1.15: `--cpu` uses its simple launcher, which starts ONE process unless MPI is configured
        (["--cpu"], 1),
        # torchrun-based launcher; on a CUDA-less machine the run picks `cpu=True` itself -> DDP over gloo
        (["--multi_gpu"], 2),
    ],
    ids=["cpu-flag", "two-processes"],
)
def test_accelerate_launch_num_processes_2(tmp_path, launcher, ranks):
    config = write_config(tmp_path, steps=4, checkpointing_steps=2)
    out = tmp_path / "run"
    cmd = [
        "accelerate",
        "launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        *launcher,
        "-m",
        "t5_compact.cli",
        "train",
        "--config",
        str(config),
        "--output_dir",
        str(out),
        "--no-tqdm",
    ]
    result = subprocess.run(
        cmd, cwd=tmp_path, env={**env(), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("student written to") == 1
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    rng_files = sorted(p.name for p in (out / "checkpoint-4").glob("random_states_*"))
    assert rng_files == [f"random_states_{i}.pkl" for i in range(ranks)]
    student = T5CompactEncoder.from_pretrained(out / "student")
    assert student(torch.tensor([[5, 6, 1]]))[0].shape == (1, 3, 32)
    assert len(json.loads((out / "heldout.json").read_text())) == 2  # start and end, main process only
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # one writer


def test_sigkill_during_training_resumes_from_last_complete_checkpoint(tmp_path):
    steps = 60
    config = write_config(tmp_path, steps=steps, checkpointing_steps=5)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "t5_compact.cli", "train", "--config", str(config), "--no-tqdm"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while not (out / "checkpoint-10").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "no checkpoint-10 within 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()][-1]
    assert killed_at < steps and not (out / "student").exists()
    result = subprocess.run(
        cmd + ["--resume", "latest"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr
    resumed_from = int(result.stderr.split("resumed from")[1].split("checkpoint-")[1].split()[0])
    assert resumed_from >= 10 and resumed_from % 5 == 0
    assert not list(out.glob(".tmp-checkpoint-*"))
    assert (out / f"checkpoint-{steps}" / "training_state.json").exists()
    T5CompactEncoder.from_pretrained(out / "student")
    # the steps logged after the checkpoint by the killed run are dropped: the log reads as one straight run
    steps_logged = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(1, steps + 1))


def test_ctrl_c_saves_a_checkpoint_says_where_and_exits_130(tmp_path):
    config = write_config(tmp_path, steps=200, checkpointing_steps=100)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "t5_compact.cli", "train", "--config", str(config), "--no-tqdm"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        log = out / "train_log.jsonl"
        while not (log.exists() and len(log.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("t5-compact train: interrupted at step ") and "--resume latest" in last, last
    step = int(last.split("interrupted at step ")[1].split(":")[0])
    assert f"saved out/checkpoint-{step};" in last and 3 <= step < 100  # output_dir: out, relative
    assert json.loads((out / f"checkpoint-{step}" / "training_state.json").read_text())["step"] == step
    assert not (out / "student").exists()
