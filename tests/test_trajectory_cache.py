"""Trajectory cache: training from recorded teacher trajectories equals the on-the-fly pool, bit for bit in fp32;
the cache resumes after a kill, is written by 2 processes as by 1, refuses a full disk and a foreign setup."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from t5_compact.cli import main as cli_main
from t5_compact.distill import family_class
from t5_compact.training.trajectories import trajectory_key
from t5_compact.training.trajectory_cache import (
    TrajectoryCache,
    done_keys,
    merge_indices,
    trajectory_bytes,
    write_trajectories,
)

PROMPTS = [f"a red cat number {i}" for i in range(5)] + ["a sign that says 'hello'", "two dogs on a car"]
pytestmark = pytest.mark.usefixtures("single_thread_fresh_accelerate")


def _config(tmp_path: Path, family: str, batch: int = 1, mode: str = "timestep", steps: int = 4) -> str:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"pretrained_model: tiny:{family}\ninit_from: tiny\nnum_inference_steps: 3\nmax_sequence_length: 12\n"
        f"resolution: 16\ntrain_batch_size: {batch}\nlearning_rate: 3.0e-3\nmax_train_steps: {steps}\n"
        f"zero_pooled: false\nsources: [{{prompts: {json.dumps(PROMPTS)}, category: quality}}]\n"
        "heldout: {quality: ['a blue dog']}\nreport_to: none\ntqdm: false\ncheckpointing_steps: 100\n"
        f"heldout_guidance: 4.0\ntrajectories: 2\noptimizer_step: {mode}\nguidance_range: [2.0, 5.0]\n"
    )
    return str(config)


def _reset() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


def _run(*argv: str) -> None:
    assert cli_main(list(argv)) == 0
    _reset()


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "student" / "model.safetensors")


def _cache(tmp_path: Path, config: str, dtype: str = "float32", name: str = "traj", batch: int = 1) -> Path:
    cache = tmp_path / name
    _run(
        "cache-teacher",
        "--config",
        config,
        "--trajectory_cache",
        str(cache),
        "--trajectory_dtype",
        dtype,
        "--trajectory_batch_size",
        str(batch),
    )
    return cache


@pytest.mark.parametrize(("family", "mode"), [("flux", "timestep"), ("sd3", "trajectory"), ("chroma", "timestep")])
def test_training_from_trajectory_cache_is_bit_identical_to_on_the_fly(tmp_path, family, mode, monkeypatch):
    """Same pooled noise and guidance, same embeddings: the recorded velocities (float32) give the very losses and
    weights of the teacher run on the fly. Batch size 1 on both sides: CPU kernels may round the last bit of a
    sample differently with other samples beside it (see the next test)."""
    config = _config(tmp_path, family, mode=mode)
    cache = _cache(tmp_path, config)
    assert (cache / "index.json").is_file() and (cache / "embeddings" / "index.json").is_file()
    assert len(TrajectoryCache(cache)) == 2 * len(PROMPTS)  # N per training prompt; held-out prompts not pooled
    embeddings = str(cache / "embeddings")
    calls = []
    cls = family_class(family)
    velocity = cls.velocity
    monkeypatch.setattr(cls, "velocity", lambda self, *a, **k: calls.append(1) or velocity(self, *a, **k))
    _run("train", "--config", config, "--output_dir", str(tmp_path / "fly"), "--teacher_cache", embeddings)
    on_the_fly, calls[:] = len(calls), []
    _run("train", "--config", config, "--output_dir", str(tmp_path / "cached"), "--trajectory_cache", str(cache))
    # no teacher pass while training: 4 steps x 3 timesteps (x2 for the CFG families' "" branch) fewer calls
    assert on_the_fly - len(calls) == 4 * 3 * (2 if family != "flux" else 1)
    assert _losses(tmp_path / "fly") == _losses(tmp_path / "cached")
    fly, cached = _weights(tmp_path / "fly"), _weights(tmp_path / "cached")
    assert all(torch.equal(fly[k], cached[k]) for k in fly)
    info = json.loads((tmp_path / "cached" / "student" / "training_info.json").read_text())
    assert (info["trajectories"], info["trajectory_cache"]) == (2, True)
    assert info["uncond_loss"] == (None if family == "flux" else "both")
    start = _weights_start(tmp_path, config)
    assert any(not torch.equal(fly[k], start[k]) for k in fly)  # it trained


def _weights_start(tmp_path: Path, config: str) -> dict[str, torch.Tensor]:
    out = tmp_path / "start"
    _run("train", "--config", config, "--output_dir", str(out), "--learning_rate", "0", "--max_train_steps", "1")
    return _weights(out)


def test_batched_and_bf16_cache_stay_close(tmp_path):
    """Batch 3 (other samples beside each one) and bf16 storage (half the disk) change the last bits only."""
    config = _config(tmp_path, "sd3", batch=3)
    fp32 = _cache(tmp_path, config, batch=4)
    bf16 = _cache(tmp_path, config, dtype="bfloat16", name="traj16", batch=4)
    size = {p: sum(f.stat().st_size for f in p.glob("traj-*.safetensors")) for p in (fp32, bf16)}
    assert 0.5 < size[bf16] / size[fp32] < 0.6  # float32 noise + bf16 velocities
    embeddings = str(fp32 / "embeddings")
    _run("train", "--config", config, "--output_dir", str(tmp_path / "fly"), "--teacher_cache", embeddings)
    for cache, rel in ((fp32, 1e-5), (bf16, 2e-2)):
        run = tmp_path / cache.name / "run"
        _run("train", "--config", config, "--output_dir", str(run), "--trajectory_cache", str(cache))
        assert _losses(run) == pytest.approx(_losses(tmp_path / "fly"), rel=rel)


def _fake_entries(n: int) -> list[tuple[str, int, int]]:
    return [(f"prompt {i // 2}", 16, i % 2) for i in range(n)]


def _fake_compute(chunk):
    rows = torch.tensor([[float(hash(e) % 1000)] for e in chunk])
    return {
        "noise": rows.expand(-1, 4).clone(),
        "velocity": rows[:, None].expand(-1, 3, 4).clone(),
        "seed": [len(e[0]) for e in chunk],
        "guidance": [3.5] * len(chunk),
    }


def test_interrupted_cache_resumes_and_refuses_until_complete(tmp_path):
    entries, meta = _fake_entries(7), {"family": "flux", "trajectories": 2}
    calls = []

    def flaky(chunk):
        calls.append(chunk)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed in the second shard
        return _fake_compute(chunk)

    with pytest.raises(KeyboardInterrupt):
        write_trajectories(tmp_path, entries, flaky, meta, batch_size=2, shard_size=4)
    assert not list(tmp_path.glob("*.tmp")) and (tmp_path / "index-r0.json").is_file()
    with pytest.raises(Exception, match="interrupted.*resumes"):
        TrajectoryCache(tmp_path)  # no merged index yet: training refuses, naming the way out
    done = done_keys(tmp_path)
    assert len(done) == 4
    todo = [e for e in entries if trajectory_key(*e) not in done]
    assert write_trajectories(tmp_path, todo, _fake_compute, meta, batch_size=2, shard_size=4) == 3
    assert merge_indices(tmp_path, meta) == 7
    with pytest.raises(Exception, match="another setup"):
        write_trajectories(tmp_path, entries, _fake_compute, {"family": "sd3", "trajectories": 2})
    cache = TrajectoryCache(tmp_path)
    noise, guidance, recorded = cache.get(["prompt 3", "prompt 0"], 16, [0, 1])
    expected = _fake_compute([("prompt 3", 16, 0), ("prompt 0", 16, 1)])
    assert torch.equal(noise, expected["noise"]) and guidance == [3.5, 3.5]
    assert len(recorded) == 3 and recorded[0][1] is None
    assert torch.equal(recorded[2][0], expected["velocity"][:, 2])


def test_disk_size_is_announced_and_a_full_disk_refused(tmp_path, monkeypatch, capsys):
    # FLUX.1 at 512 px: 16 x 64 x 64 latents, 20 bf16 velocities + the float32 noise ~ 2.9 MB (1024 px: 4x)
    assert trajectory_bytes(16 * 64 * 64, 20, "bfloat16", with_uncond=False) / 1e6 == pytest.approx(2.88, abs=0.01)
    assert trajectory_bytes(16 * 128 * 128, 20, "bfloat16", False) == 4 * trajectory_bytes(
        16 * 64 * 64, 20, "bfloat16", False
    )
    config = _config(tmp_path, "flux")
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**12, 10**12, 1000))
    code = cli_main(["cache-teacher", "--config", config, "--trajectory_cache", str(tmp_path / "traj")])
    err = capsys.readouterr().err
    assert code == 2 and "14 trajectories to write" in err and "needed" in err and "free space" in err
    assert not list((tmp_path / "traj").glob("traj-*"))


def test_training_refuses_a_cache_for_another_setup(tmp_path, capsys):
    config = _config(tmp_path, "flux", steps=2)
    cache = _cache(tmp_path, config)
    out = str(tmp_path / "run")
    for flags, expected in (
        (["--num_inference_steps", "4"], "num_inference_steps"),
        (["--seed", "1"], "'seed'"),
        (["--trajectories", "3"], "trajectories"),  # the pool grew: index 2 was never recorded
        (["--mixed_precision", "bf16"], "'dtype'"),  # the teacher ran in float32
    ):
        code = cli_main(["train", "--config", config, "--output_dir", out, "--trajectory_cache", str(cache), *flags])
        _reset()
        assert code == 2 and expected in capsys.readouterr().err
    code = cli_main(["train", "--config", config, "--trajectory_cache", str(cache), "--trajectories", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "trajectory_cache needs trajectories" in err and "got 0" in err and str(cache) in err
    code = cli_main(
        ["cache-teacher", "--config", config, "--trajectory_cache", str(cache), "--trajectory_batch_size", "0"]
    )
    assert code == 2 and "--trajectory_batch_size must be a positive number" in capsys.readouterr().err


def test_two_processes_write_their_own_shards_and_one_index(tmp_path):
    """`accelerate launch` with 2 CPU processes: shards from both ranks, one merged index, the same content as
    one process (batch size 1, so each trajectory is computed alone on either side)."""
    config = _config(tmp_path, "sd3")
    single = _cache(tmp_path, config, name="one")
    cmd = ["accelerate", "launch", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "--multi_gpu", "-m", "t5_compact.cli", "cache-teacher", "--config", config]
    cmd += [
        "--trajectory_cache",
        str(tmp_path / "two"),
        "--trajectory_dtype",
        "float32",
        "--trajectory_batch_size",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = tmp_path / "two"
    assert {p.name.split("-")[1] for p in two.glob("traj-*.safetensors")} == {"r0", "r1"}
    assert sorted(p.name for p in two.glob("*.json")) == ["index.json"]
    a, b = TrajectoryCache(single), TrajectoryCache(two)
    assert a.entries.keys() == b.entries.keys() and a.meta == b.meta
    for key, (shard, row, seed, guidance) in a.entries.items():
        other = b.entries[key]
        assert (seed, guidance) == (other[2], other[3])
        with safe_open(single / shard, "pt") as x, safe_open(two / other[0], "pt") as y:
            for name in ("noise", "velocity", "uncond_velocity"):
                assert torch.equal(x.get_slice(name)[row], y.get_slice(name)[other[1]]), (key, name)
