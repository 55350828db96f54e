"""FSDP2 `fully_shard` on 2 CPU processes over gloo gives the same student as DDP (torch 2.13).

accelerate 1.15 cannot run this through `examples/configs/accelerate/fsdp.yaml` on CPU: with `cpu=True` it selects
DDP over gloo (`MULTI_CPU`) and ignores the FSDP plugin. So the worker shards the student with torch directly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve().parent / "fsdp_worker.py"


def _run(mode: str, out: Path) -> None:
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(WORKER), mode, str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_fsdp2_fully_shard_equals_ddp_on_two_cpu_processes(tmp_path):
    from t5_compact.costs.models import RunSpec, build_models

    _run("fsdp", tmp_path / "fsdp.pt")
    _run("ddp", tmp_path / "ddp.pt")
    fsdp = torch.load(tmp_path / "fsdp.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    initial = build_models(RunSpec("flux", {}, {}, True, "tiny:flux"), torch.float32).student.state_dict()
    assert fsdp.keys() == ddp.keys()
    for key in fsdp:
        torch.testing.assert_close(fsdp[key], ddp[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(fsdp[k], initial[k]) for k in fsdp)  # the updates really moved the weights
