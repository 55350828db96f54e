"""Every bad input of issue 2 item 4: a specific exception type, a message naming the file and what was expected."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, T5Config, T5EncoderModel, T5ForConditionalGeneration

from t5_compact import (
    CheckpointError,
    CheckpointKeysError,
    CorruptCheckpointError,
    EncoderNotFoundError,
    NotACompactEncoderError,
    T5CompactEncoder,
    WidthMismatchError,
)
from t5_compact.pipelines import check_width, load_pipeline
from t5_compact.tiny import tiny_clip_config, tiny_compact_encoder

T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_heads=64, num_layers=24)


def rss_bytes() -> int:
    """Resident memory of this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> int:
    """A valid safetensors file of the given shapes whose data is a sparse hole: full size, no disk, no RAM."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 2 * int(torch.Size(shape).numel())
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little") + blob)
        fh.truncate(8 + len(blob) + offset)
    return 8 + len(blob) + offset


def t5_encoder_shapes(**geometry) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a projector-less T5 encoder (what FLUX's `text_encoder_2` holds), from the meta device."""
    with torch.device("meta"):
        model = T5EncoderModel(T5Config(**geometry, feed_forward_proj="gated-gelu", is_encoder_decoder=False))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def small_xxl_file(tmp_path_factory) -> Path:
    """A real (loadable) T5 encoder file of T5-XXL's width 4096 but one layer and a tiny vocabulary."""
    torch.manual_seed(0)
    model = T5EncoderModel(
        T5Config(vocab_size=8, d_model=4096, d_kv=4, d_ff=8, num_heads=2, num_layers=1, is_encoder_decoder=False)
    )
    path = tmp_path_factory.mktemp("xxl") / "t5xxl_fp16.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, path)
    return path


def assert_names(err: pytest.ExceptionInfo, path: Path | str, *expected: str) -> None:
    """The message names the file and says what was expected."""
    message = str(err.value)
    assert str(path) in message, message
    for text in expected:
        assert re.search(text, message), (text, message)


# --- another model given as a compact encoder ------------------------------------------------------------------------


def test_full_size_t5_xxl_file_is_rejected_from_its_header(tmp_path):
    path = tmp_path / "t5xxl_bf16.safetensors"
    size = write_sparse_safetensors(path, t5_encoder_shapes(**T5_XXL))
    assert size > 9e9  # the real thing: 4.76 B parameters in bf16
    before, start = rss_bytes(), time.perf_counter()
    with pytest.raises(NotACompactEncoderError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert time.perf_counter() - start < 5 and rss_bytes() - before < 200e6  # nothing was loaded
    assert_names(err, path, "T5-XXL encoder", "final_projection", "from_t5")


def test_t5_xxl_pipeline_subfolder_is_rejected(tmp_path):
    folder = tmp_path / "text_encoder_2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5EncoderModel"]}))
    write_sparse_safetensors(folder / "model.safetensors", t5_encoder_shapes(**T5_XXL))
    with pytest.raises(NotACompactEncoderError) as err:
        T5CompactEncoder.from_pretrained(folder)
    assert_names(err, folder, "T5-XXL encoder", "no projector")


def test_small_xxl_width_file_is_rejected_also_by_load_pipeline(small_xxl_file, tiny_flux_dir):
    with pytest.raises(NotACompactEncoderError) as err:
        T5CompactEncoder.from_pretrained(small_xxl_file)
    assert_names(err, small_xxl_file, "T5-XXL encoder")
    with pytest.raises(NotACompactEncoderError) as err:
        load_pipeline(tiny_flux_dir, small_xxl_file)
    assert_names(err, small_xxl_file, "T5-XXL encoder")


def test_full_t5_encoder_decoder_is_rejected(tmp_path):
    config = T5Config(vocab_size=16, d_model=8, d_kv=4, d_ff=8, num_heads=2, num_layers=1, num_decoder_layers=1)
    path = tmp_path / "flan-t5.safetensors"
    state = T5ForConditionalGeneration(config).state_dict()
    save_file({k: v.clone().contiguous() for k, v in state.items() if k != "lm_head.weight"}, path)
    with pytest.raises(NotACompactEncoderError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert_names(err, path, "encoder-decoder", "from_t5")


def test_clip_text_model_file_and_folder_are_rejected(tmp_path):
    clip = CLIPTextModel(tiny_clip_config())
    for name, prefix in (("clip_l.safetensors", "text_model."), ("clip_t5_names.safetensors", "")):
        path = tmp_path / name  # ComfyUI's clip_l files use `text_model.*`; transformers 5 saves without it
        save_file({prefix + k: v.contiguous() for k, v in clip.state_dict().items()}, path)
        with pytest.raises(NotACompactEncoderError) as err:
            T5CompactEncoder.from_pretrained(path)
        assert_names(err, path, "CLIP text model", "text_encoder / clip_l / clip_g")
    clip.save_pretrained(tmp_path / "text_encoder")
    with pytest.raises(NotACompactEncoderError) as err:
        T5CompactEncoder.from_pretrained(tmp_path / "text_encoder")
    assert_names(err, tmp_path / "text_encoder", "CLIP text model")


def test_pipeline_folder_given_as_encoder(tiny_flux_dir):
    with pytest.raises(NotACompactEncoderError) as err:
        T5CompactEncoder.from_pretrained(tiny_flux_dir)
    assert_names(err, tiny_flux_dir, "diffusers pipeline folder")


# --- damaged files ---------------------------------------------------------------------------------------------------


def test_truncated_file(tiny_encoder_dir, tmp_path):
    data = (tiny_encoder_dir / "model.safetensors").read_bytes()
    path = tmp_path / "partial.safetensors"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CorruptCheckpointError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert_names(err, path, "truncated", f"the file has {path.stat().st_size}", "download or convert it again")


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 5, os.urandom(4096), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}"],
    ids=["empty", "short", "random", "bad-json"],
)
def test_garbage_safetensors(tmp_path, content):
    path = tmp_path / "encoder.safetensors"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert_names(err, path, "not a valid safetensors file")


def test_garbage_and_malicious_pth_are_never_unpickled(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(2048))
    with pytest.raises(CorruptCheckpointError) as err:
        T5CompactEncoder.from_pretrained(garbage)
    assert_names(err, garbage, "not a torch state dict")

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"  # unpickling this with weights_only=False would run `open(marker, "w")`
    torch.save({"weight": torch.zeros(1), "payload": _Exploit(str(marker))}, evil)
    with pytest.raises(CorruptCheckpointError) as err:
        T5CompactEncoder.from_pretrained(evil)
    assert not marker.exists()
    assert_names(err, evil, r"refused: .* pickled Python object \(io.open\)", "never unpickles")
    message = str(err.value)  # one line, and no advice to unpickle (torch's own text recommends weights_only=False)
    assert "\n" not in message and "weights_only=False" not in message and "add_safe_globals" not in message
    torch.load(evil, weights_only=False)  # control: the payload is live, a plain unpickle runs it
    assert marker.exists()


class _Exploit:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_bad_config_json(tiny_encoder_dir, tmp_path):
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((tiny_encoder_dir / "model.safetensors").read_bytes())
    (folder / "config.json").write_text("{ this is not json")
    with pytest.raises(CorruptCheckpointError) as err:
        T5CompactEncoder.from_pretrained(folder)
    assert_names(err, folder / "config.json", "not a readable JSON file")


def test_unsupported_suffix_and_empty_folder(tmp_path):
    path = tmp_path / "encoder.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(CheckpointError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert_names(err, path, "unsupported file type '.gguf'", r"\.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as err:
        T5CompactEncoder.from_pretrained(tmp_path / "empty")
    assert_names(err, tmp_path / "empty", "expected one model.safetensors", "no weight file")


# --- missing / unexpected keys ---------------------------------------------------------------------------------------


def _state(model: T5CompactEncoder) -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def test_missing_keys(tiny_encoder, tmp_path):
    state = _state(tiny_encoder)
    del state["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    del state["encoder.final_layer_norm.weight"]
    path = tmp_path / "missing.safetensors"
    save_file(state, path)
    with pytest.raises(CheckpointKeysError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert_names(
        err, path, "missing 2 tensors", "encoder.block.1.layer.1.DenseReluDense.wo.weight", "final_layer_norm"
    )


def test_missing_projector_output_layer(tiny_encoder, tmp_path):
    state = _state(tiny_encoder)
    del state["final_projection.3.weight"]
    path = tmp_path / "half_projector.safetensors"
    save_file(state, path)
    with pytest.raises(CheckpointKeysError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert_names(err, path, "missing tensor 'final_projection.3.weight'")


def test_unexpected_and_misshaped_keys(tiny_encoder, tmp_path):
    state = _state(tiny_encoder)
    state["encoder.block.0.layer.0.SelfAttention.extra.weight"] = torch.zeros(2, 2)
    state["lora_A.weight"] = torch.zeros(2, 2)
    path = tmp_path / "extra.safetensors"
    save_file(state, path)
    with pytest.raises(CheckpointKeysError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert_names(err, path, "unexpected 2 tensors", "lora_A.weight", "SelfAttention.extra.weight")

    state = _state(tiny_encoder)
    state["encoder.block.1.layer.0.SelfAttention.k.weight"] = torch.zeros(8, 16)
    save_file(state, tmp_path / "shape.safetensors")
    with pytest.raises(CheckpointKeysError) as err:
        T5CompactEncoder.from_pretrained(tmp_path / "shape.safetensors")
    assert_names(err, tmp_path / "shape.safetensors", r"wrong shapes: encoder\.block\.1\.layer\.0\.SelfAttention\.k")


def test_config_that_disagrees_with_the_weights(tiny_encoder, tmp_path):
    tiny_encoder.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["projection_out_dim"] = 4096
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointKeysError) as err:
        T5CompactEncoder.from_pretrained(tmp_path)
    assert_names(err, tmp_path, "config.json says projection_out_dim=4096 but the weights have projection_out_dim=32")


# --- width mismatch --------------------------------------------------------------------------------------------------


def test_width_mismatch_with_the_pipeline(tiny_flux_dir, tiny_sd3_dir, tmp_path):
    wide = tiny_compact_encoder(out_dim=48)
    with pytest.raises(WidthMismatchError) as err:
        check_width(wide, 32, "FLUX.1-dev")
    assert_names(err, "T5CompactEncoder", "outputs width 48", "FLUX.1-dev expects joint_attention_dim=32")
    wide.save_pretrained(tmp_path / "wide")
    for base in (tiny_flux_dir, tiny_sd3_dir):
        with pytest.raises(WidthMismatchError) as err:
            load_pipeline(base, tmp_path / "wide")
        assert_names(err, tmp_path / "wide", "outputs width 48", "joint_attention_dim=32", str(base))
    check_width(tiny_compact_encoder(), 32)  # the right width passes


# --- paths and hub ids -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["missing.safetensors", "no_such_dir", "./student", "a/b/c"])
def test_nonexistent_path(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EncoderNotFoundError) as err:
        T5CompactEncoder.from_pretrained(name)
    assert isinstance(err.value, FileNotFoundError)
    assert_names(err, name, "no such file or folder", "expected a compact encoder folder")
    with pytest.raises(EncoderNotFoundError):
        T5CompactEncoder.from_pretrained(tmp_path / name)


def test_missing_path_that_looks_like_a_repo_id_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(EncoderNotFoundError) as err:
        T5CompactEncoder.from_pretrained("outputs/student")  # `outputs` exists: a local path was meant
    assert_names(err, "outputs/student", "no such file or folder")
    with pytest.raises(EncoderNotFoundError) as err:
        T5CompactEncoder.from_pretrained(Path("acme/student"))  # a Path is never a repo id
    assert_names(err, "acme/student", "no such file or folder")


def test_hub_miss_while_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(EncoderNotFoundError) as err:
        T5CompactEncoder.from_pretrained("acme/never-downloaded", cache_dir=tmp_path / "hub")
    assert time.perf_counter() - start < 5  # no network attempt
    assert_names(
        err,
        "acme/never-downloaded",
        "not in the local Hugging Face cache",
        "HF_HUB_OFFLINE is set",
        "hf download acme/never-downloaded",
    )


def test_missing_pipeline(tmp_path):
    with pytest.raises(EncoderNotFoundError) as err:
        load_pipeline(tmp_path / "no-pipeline", tiny_compact_encoder())
    assert_names(err, tmp_path / "no-pipeline", "no such pipeline folder")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool])
def test_integer_or_bool_weights_are_refused_from_the_header(tiny_encoder, tmp_path, dtype):
    state = {k: v.contiguous() for k, v in tiny_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    state["encoder.block.0.layer.0.SelfAttention.q.weight"] = state[
        "encoder.block.0.layer.0.SelfAttention.q.weight"
    ].to(dtype)
    path = tmp_path / "ints.safetensors"
    save_file(state, path)
    with pytest.raises(CheckpointKeysError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert_names(err, path, "SelfAttention.q.weight is stored as (I64|I8|BOOL)", "floating point")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_nan_or_inf_weights_are_refused_naming_the_tensor(tiny_encoder, tmp_path, bad, dtype):
    state = {k: v.to(dtype).contiguous() for k, v in tiny_encoder.state_dict().items()}
    state.pop("encoder.embed_tokens.weight")
    state["final_projection.3.weight"][1, 2] = bad
    path = tmp_path / "nan.safetensors"
    save_file(state, path)
    with pytest.raises(CorruptCheckpointError) as err:
        T5CompactEncoder.from_pretrained(path)
    assert_names(err, path, r"final_projection.3.weight holds NaN or Inf")


def test_large_finite_fp16_weights_whose_sum_overflows_still_load(tiny_encoder, tmp_path):
    state = {k: v.half().contiguous() for k, v in tiny_encoder.state_dict().items()}
    state.pop("encoder.embed_tokens.weight")
    state["shared.weight"].fill_(60000.0)  # finite, but the fp16 sum is inf
    save_file(state, tmp_path / "big.safetensors")
    assert T5CompactEncoder.from_pretrained(tmp_path / "big.safetensors").shared.weight.max() == 60000.0
