"""Training you can trust: the testbed where the text matters, the null student and prompt-specific fidelity,
SD3's negative-prompt branch, precision parity, and what a run records (training_info.json, teacher cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from test_train import HELDOUT, SEMANTICS, TEXT, heldout_history, run, tiny_values
from torch import nn

from t5_compact.distill import (
    NullStudent,
    PromptEncoder,
    adapter_from_pipeline,
    build_heldout,
    heldout_vision_loss,
    mean_embedding,
    prompt_fidelity,
)
from t5_compact.tiny import tiny_compact_encoder, tiny_pipeline
from t5_compact.training.config import ConfigError, build_config
from t5_compact.training.models import FLUX_SCHEDULER

pytestmark = pytest.mark.usefixtures("single_thread_fresh_accelerate")
ALL = [{"prompts": SEMANTICS, "category": "semantics"}, {"prompts": TEXT, "category": "text"}]


def _tiny(family: str):
    pipe = tiny_pipeline(family)
    if family == "flux":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
    teacher_t5 = pipe.text_encoder_2 if family == "flux" else pipe.text_encoder_3
    encoder = PromptEncoder.from_pipeline(pipe, max_sequence_length=12, with_clip=family == "sd3")
    return pipe, adapter_from_pipeline(pipe), encoder, teacher_t5


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_tiny_testbed_null_student_closes_under_half_the_gap(family):
    """On the tiny presets the null student (teacher's mean embedding) is not a good student: per category its
    held-out L_vision stays above half the untrained student's (the teacher is at 0)."""
    _, adapter, encoder, teacher_t5 = _tiny(family)
    heldout = build_heldout(HELDOUT, encoder, teacher_t5=teacher_t5)
    mean = mean_embedding(SEMANTICS + TEXT, lambda batch: encoder.encode(batch, teacher_t5).t5)
    negative = encoder.encode([""], teacher_t5) if family == "sd3" else None
    kwargs = dict(num_steps=3, height=16, width=16, guidance=3.5, negative=negative)
    untrained = heldout_vision_loss(adapter, tiny_compact_encoder(), heldout, **kwargs)
    null = heldout_vision_loss(adapter, NullStudent(mean), heldout, **kwargs)
    for category in HELDOUT:
        assert null[category] > 0.5 * untrained[category], (category, null, untrained)
    # and the teacher itself scores exactly 0, its fidelity exactly 1
    teacher = heldout_vision_loss(adapter, _Replay(teacher_t5), heldout, **kwargs)
    assert prompt_fidelity(teacher, null) == {c: 1.0 for c in HELDOUT}


class _Replay(nn.Module):
    """A student whose output equals the teacher's embedding exactly (fp32 teacher pass, times a parameter 1.0)."""

    def __init__(self, teacher_t5: nn.Module):
        super().__init__()
        self.teacher_t5 = [teacher_t5.requires_grad_(False).eval()]  # not a submodule: student.train() keeps it eval
        self.one = nn.Parameter(torch.ones(()))

    def forward(self, input_ids, **_):
        with torch.autocast("cpu", enabled=False), torch.no_grad():
            out = self.teacher_t5[0](input_ids)[0]
        return (out * self.one,)


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_student_equal_to_teacher_scores_exactly_zero(mixed_precision):
    """Teacher and student velocities run under the same precision context: no loss floor under autocast."""
    from accelerate import Accelerator

    from t5_compact.training.data import Batch
    from t5_compact.training.step import StepContext, TeacherSource, train_step

    _, adapter, encoder, teacher_t5 = _tiny("flux")
    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision)
    student = _Replay(teacher_t5)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    ctx = StepContext(
        accelerator, adapter, encoder, TeacherSource(encoder, teacher_t5), student, optimizer, schedule, 3
    )
    batch = Batch(0, 0, SEMANTICS[:3], ["semantics"] * 3, 16, 3.5)
    result = train_step(ctx, batch)
    assert result.per_sample.tolist() == [0.0, 0.0, 0.0]
    if mixed_precision == "bf16":  # the check has teeth: a bf16 student pass against an fp32 teacher pass is not 0
        from t5_compact.distill import follow_teacher, vision_loss

        teacher = ctx.teacher(batch.prompts, accelerator.device)
        latents = adapter.prepare_latents(3, 16, 16, generator=torch.Generator().manual_seed(0))
        point = next(follow_teacher(adapter, teacher, latents, num_steps=3, height=16, width=16, guidance=3.5))
        with accelerator.autocast():
            v = adapter.velocity(point.latents, point.t, teacher, 3.5, height=16, width=16)
        assert vision_loss(v, point.velocity).min() > 0


def test_flux_fp16_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="fp16") as err:
        run(tmp_path, mixed_precision="fp16")
    assert "\n" not in str(err.value)


def test_sd3_negative_prompt_branch_is_distilled(tmp_path):
    """The student's "" branch error (student "" vs teacher "" velocity along the guided teacher trajectories) falls
    by at least half in a short run with the default `uncond_loss`, and ends below a run that trains only the
    conditional branch (`none`, whose "" branch moves only through the shared weights)."""
    stages = [{"name": "all", "steps": 20, "sources": ALL}]
    common = dict(pretrained_model="tiny:sd3", stages=stages, checkpointing_steps=100, heldout_guidance=4.0)
    run(tmp_path / "both", **common)
    history = heldout_history(tmp_path / "both")
    for category in HELDOUT:
        assert history[-1]["L_vision_uncond"][category] <= 0.5 * history[0]["L_vision_uncond"][category], history
    run(tmp_path / "none", uncond_loss="none", **common)
    untouched = heldout_history(tmp_path / "none")
    for category in HELDOUT:
        assert history[-1]["L_vision_uncond"][category] < untouched[-1]["L_vision_uncond"][category], (
            history,
            untouched,
        )


def test_heldout_metric_does_not_depend_on_the_training_seed(tmp_path):
    """Held-out noise comes from `heldout_seed`: two training seeds start from the same untrained-free numbers."""
    stages = [{"name": "all", "steps": 1, "sources": ALL}]
    run(tmp_path / "a", seed=0, stages=stages, init_from=None, learning_rate=0.0)
    run(tmp_path / "b", seed=5, stages=stages, init_from=None, learning_rate=0.0)
    a, b = heldout_history(tmp_path / "a")[0], heldout_history(tmp_path / "b")[0]
    assert a["L_null"] == b["L_null"]


def test_config_rejects_unknown_uncond_loss(tmp_path):
    with pytest.raises(ConfigError, match="uncond_loss"):
        build_config(tiny_values(tmp_path, uncond_loss="sometimes"), {})


def test_trained_length_is_the_default_of_encode(tmp_path, capsys):
    """`encode` uses the student's recorded token length and says once that a long prompt was cut."""
    from t5_compact.cli import main

    student = tiny_compact_encoder()
    student.save_pretrained(tmp_path / "student")
    (tmp_path / "student" / "training_info.json").write_text(json.dumps({"max_sequence_length": 7}))
    tiny_pipeline("flux").tokenizer_2.save_pretrained(tmp_path / "tok")
    args = ["encode", "a red cat", "two red cats and three blue dogs next to a tree", "--encoder"]
    assert main([*args, str(tmp_path / "student"), "--tokenizer", str(tmp_path / "tok"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "prompt_embeds: (2, 7, 32)" in out
    assert out.count("truncated to 7 tokens") == 1


def test_teacher_cache_of_another_dtype_is_refused(tmp_path):
    """A cache written in bf16 does not feed an fp32 run: one line naming the cache folder."""
    from t5_compact.training.cache import build_teacher_cache
    from t5_compact.training.loop import train

    cache = tmp_path / "cache"
    values = tiny_values(tmp_path / "run", teacher_cache=str(cache), stages=[{"steps": 1, "sources": ALL}])
    build_teacher_cache(build_config({**values, "mixed_precision": "bf16"}, {}), device="cpu")
    index = json.loads((cache / "index.json").read_text())
    assert set(index["meta"]) >= {"teacher", "dtype", "tokenizer", "max_sequence_length"}
    with pytest.raises(ConfigError) as err:
        train(build_config(values, {}))
    message = str(err.value)
    assert str(cache) in message and "dtype" in message and "\n" not in message
    assert not Path(tmp_path / "run" / "student").exists()


def test_generate_defaults_to_the_trained_length(tmp_path, tiny_flux_dir, capsys):
    """`generate` without `--max-sequence-length` runs at the student's recorded length and says once what it cut."""
    from t5_compact.cli import main

    tiny_compact_encoder().save_pretrained(tmp_path / "student")
    (tmp_path / "student" / "training_info.json").write_text(json.dumps({"max_sequence_length": 6}))
    prompts = ["two red cats and three blue dogs next to a tree", "a white panda above two cups on a book"]
    args = ["generate", "--pipeline", str(tiny_flux_dir), "--encoder", str(tmp_path / "student"), *prompts]
    assert main([*args, "-o", str(tmp_path / "o.png"), "--steps", "1", "--height", "16", "--width", "16"]) == 0
    out = capsys.readouterr().out
    assert out.count("note: 2 prompt(s) truncated to 6 tokens") == 1
    assert (tmp_path / "o-0.png").exists() and (tmp_path / "o-1.png").exists()


def test_uses_cfg_asks_the_adapter_first():
    """Families decide classifier-free guidance through their adapter; SD3 / FLUX fall back on the family name."""
    from t5_compact.distill import uses_cfg

    _, flux, _, _ = _tiny("flux")
    assert uses_cfg(flux) is False
    flux.uses_cfg = lambda: True  # e.g. a CFG family whose adapter says so
    assert uses_cfg(flux) is True
    _, sd3, _, _ = _tiny("sd3")
    assert uses_cfg(sd3) is True
