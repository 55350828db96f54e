"""The compact encoder model: outputs, dtypes, dropout, auto classes, and paper geometries from config alone."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig, AutoModel, T5EncoderModel
from transformers.modeling_outputs import BaseModelOutput

from t5_compact import T5CompactConfig, T5CompactEncoder, compact_config
from t5_compact.configuration_t5_compact import STUDENT_SIZES, T5_GEOMETRIES
from t5_compact.geometry import canonical_shapes, infer_geometry
from t5_compact.loading import cast_encoder, expected_shapes
from t5_compact.tiny import TINY_T5_VOCAB, TINY_WIDTH, tiny_compact_config, tiny_teacher_t5

# Parameter counts (encoder + projector) stated for the paper's students, REFERENCE.md section 1.
PAPER_PARAMS = {"small": 54e6, "base": 130e6, "large": 362e6, "xl": 1.25e9}


def _ids(batch: int = 2, seq: int = 7) -> torch.Tensor:
    return torch.randint(0, TINY_T5_VOCAB, (batch, seq), generator=torch.Generator().manual_seed(1))


def test_forward_returns_projected_base_model_output(tiny_encoder):
    ids = _ids()
    out = tiny_encoder(ids)
    assert isinstance(out, BaseModelOutput)
    assert out.last_hidden_state.shape == (2, 7, TINY_WIDTH)
    assert torch.equal(tiny_encoder(ids)[0], out.last_hidden_state)  # indexable like a tuple, as diffusers uses it
    as_tuple = tiny_encoder(ids, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.last_hidden_state)
    hidden = tiny_encoder(ids, output_hidden_states=True).hidden_states
    assert len(hidden) == tiny_encoder.config.num_layers + 1 and hidden[-1].shape == (2, 7, 16)
    assert torch.isfinite(out.last_hidden_state).all()
    assert tiny_encoder.dtype == torch.float32 and tiny_encoder.device == torch.device("cpu")
    assert tiny_encoder.out_dim == TINY_WIDTH
    assert isinstance(tiny_encoder, T5EncoderModel)  # what keeps diffusers' slot type check quiet


def test_projector_is_applied_after_final_norm(tiny_encoder):
    ids = _ids()
    normed = tiny_encoder.encoder(input_ids=ids).last_hidden_state
    assert torch.allclose(tiny_encoder(ids)[0], tiny_encoder.final_projection(normed))


def test_dropout_is_off_in_eval_and_on_in_train():
    model = T5CompactEncoder(tiny_compact_config(dropout_rate=0.5, projection_dropout=0.5))
    ids = _ids()
    model.train()
    assert not torch.equal(model(ids)[0], model(ids)[0])
    model.eval()
    assert torch.equal(model(ids)[0], model(ids)[0])


def test_fp16_keeps_wo_in_fp32_and_stays_finite(tiny_encoder):
    ids = _ids()
    reference = tiny_encoder(ids)[0]
    half = cast_encoder(tiny_encoder, torch.float16)
    wo = [m.weight.dtype for name, m in half.named_modules() if name.endswith("DenseReluDense.wo")]
    assert wo == [torch.float32] * half.config.num_layers
    assert half.shared.weight.dtype == torch.float16 and half.final_projection[3].weight.dtype == torch.float16
    assert half.dtype == torch.float16 and half.config.dtype == torch.float16
    out = half(ids)[0]
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.allclose(out.float(), reference, atol=2e-2, rtol=2e-2)


def test_bf16_casts_everything(tiny_encoder):
    model = cast_encoder(tiny_encoder, torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model(_ids())[0].dtype == torch.bfloat16


def test_auto_config_and_auto_model(tiny_encoder, tmp_path):
    tiny_encoder.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is T5CompactConfig and config.projection_out_dim == TINY_WIDTH
    model = AutoModel.from_pretrained(tmp_path)
    assert type(model) is T5CompactEncoder and not model.training
    ids = _ids()
    assert torch.equal(model(ids)[0], tiny_encoder(ids)[0])
    assert type(AutoModel.from_config(config)) is T5CompactEncoder


@pytest.mark.parametrize("size", STUDENT_SIZES)
def test_paper_geometries_from_config_alone(size):
    config = compact_config(size)
    with torch.device("meta"):
        model = T5CompactEncoder(config)
    assert all(p.is_meta for p in model.parameters())  # nothing allocated, even for XL
    assert model.config.d_model == T5_GEOMETRIES[size]["d_model"]
    assert model.num_parameters() == pytest.approx(PAPER_PARAMS[size], rel=0.03)
    # The loader reads the same geometry back off the tensor shapes.
    shapes = expected_shapes(config)
    inferred = infer_geometry(canonical_shapes(shapes, size), size)
    for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "projection_out_dim"):
        assert inferred[key] == getattr(config, key), key


def test_base_geometry_matches_flan_t5_base_release():
    config = compact_config("base")
    shapes = expected_shapes(config)
    assert len(shapes) == 113 - 2 + 2  # the paper's 113 tensors: same count once unwrapped (tied copy absent)
    assert shapes["shared.weight"] == (32128, 768)
    assert shapes["final_projection.0.weight"] == (4096, 768)
    assert shapes["final_projection.3.weight"] == (4096, 4096)
    assert shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] == (32, 12)


@pytest.mark.parametrize(
    ("field", "value"),
    [("projection_act", "tanh"), ("projection_dropout", 1.5), ("projection_out_dim", 0), ("d_model", -1)],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(StrictDataclassClassValidationError, match=f"T5CompactConfig.{field}"):
        tiny_compact_config(**{field: value})


def test_from_t5_keeps_the_t5_encoder_and_adds_a_projector():
    teacher = tiny_teacher_t5(width=24)
    assert not teacher.training
    student = T5CompactEncoder.from_t5(teacher, projection_hidden_dim=40, projection_out_dim=TINY_WIDTH, seed=3)
    ids = _ids()
    assert torch.equal(student.encoder(input_ids=ids).last_hidden_state, teacher(ids)[0])
    assert student(ids)[0].shape == (2, 7, TINY_WIDTH)
    assert student.config.model_type == "t5_compact" and student.config.d_model == 24
    assert not student.training  # mirrors the T5 it came from
