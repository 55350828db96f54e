"""Shared fixtures: tiny random pipelines and encoders, built offline from configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t5_compact.tiny import tiny_compact_encoder, tiny_pipeline


@pytest.fixture(autouse=True)
def _offline_and_deterministic(monkeypatch):
    """Tests never reach a hub, and every test starts from the same RNG state."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory) -> Path:
    """A tiny random FLUX-dev-style pipeline saved with `save_pretrained`."""
    path = tmp_path_factory.mktemp("tiny_flux")
    tiny_pipeline("flux").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion 3 pipeline saved with `save_pretrained`."""
    path = tmp_path_factory.mktemp("tiny_sd3")
    tiny_pipeline("sd3").save_pretrained(path)
    return path


@pytest.fixture
def tiny_encoder():
    """A tiny random compact encoder projecting to the tiny transformers' width (32)."""
    return tiny_compact_encoder()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny compact encoder saved with `save_pretrained`."""
    path = tmp_path_factory.mktemp("tiny_compact")
    tiny_compact_encoder().save_pretrained(path)
    return path


@pytest.fixture
def single_thread_fresh_accelerate():
    """One torch thread (tiny ops on a shared 2-core box run many times slower with more) and a fresh
    accelerate state, so each in-process training run builds its own Accelerator."""
    from accelerate.state import AcceleratorState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(True)
