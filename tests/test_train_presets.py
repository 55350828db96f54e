"""Every shipped preset parses and validates (keys, types, stages); the paper preset encodes the paper's recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from t5_compact.training.config import build_config, read_config_file

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


@pytest.mark.parametrize("name", ["tiny-cpu", "flux-base-paper", "flux-base-24gb", "sd3-base"])
def test_preset_validates(name):
    config = build_config(read_config_file(CONFIGS / f"{name}.yaml"), {})
    assert config.total_steps() > 0 and config.stage_list()


def test_paper_preset_matches_the_paper():
    config = build_config(read_config_file(CONFIGS / "flux-base-paper.yaml"), {})
    assert (config.learning_rate, config.weight_decay, config.lr_scheduler) == (1e-4, 1e-3, "constant")
    assert (config.num_inference_steps, config.max_sequence_length, config.train_batch_size) == (20, 77, 4)
    assert config.guidance_values() == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert config.optimizer_step == "timestep" and config.zero_pooled and config.mixed_precision == "bf16"
    assert config.init_from == "google/flan-t5-base" and config.embedding_loss_weight == 0
    stages = config.stage_list()
    assert [(s["name"], s["resolution"], s["steps"]) for s in stages] == [
        ("semantics", 512, 50_000),
        ("text", 1024, 70_000),
        ("mixed", 512, 200_000),
    ]
    assert {src["category"] for src in stages[2]["sources"]} == {"quality", "semantics", "text"}


@pytest.mark.parametrize("name", ["fsdp", "deepspeed-zero2", "ddp-multi-node"])
def test_accelerate_configs_parse(name):
    data = yaml.safe_load((CONFIGS / "accelerate" / f"{name}.yaml").read_text())
    assert data["distributed_type"] in {"FSDP", "DEEPSPEED", "MULTI_GPU"}
