"""The converter: our folder <-> one ComfyUI-ready .safetensors file, exact in fp32, config carried in metadata."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_loading import paper_model, write_paper_release

from t5_compact import CorruptCheckpointError, T5CompactEncoder
from t5_compact.cli import main
from t5_compact.convert import comfyui_state_dict, convert, save_comfyui
from t5_compact.geometry import METADATA_CONFIG_KEY
from t5_compact.loading import expected_shapes
from t5_compact.tiny import TINY_T5_VOCAB, tiny_compact_encoder

COMFY_KEYS = {
    "shared.weight",
    "encoder.final_layer_norm.weight",
    "final_projection.0.weight",
    "final_projection.3.weight",
}


def ids() -> torch.Tensor:
    return torch.randint(0, TINY_T5_VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))


@pytest.fixture
def unusual_encoder():
    """Settings the tensor shapes cannot tell: only the metadata config carries them through a single file."""
    return tiny_compact_encoder(projection_act="gelu", layer_norm_epsilon=1e-5, feed_forward_proj="gated-silu")


def test_folder_to_comfyui_to_folder_is_exact_in_fp32(unusual_encoder, tmp_path):
    unusual_encoder.save_pretrained(tmp_path / "src")
    single = convert(tmp_path / "src", tmp_path / "student.safetensors")
    with safe_open(str(single), "pt") as fh:
        keys, metadata = set(fh.keys()), fh.metadata()
        dtypes = {fh.get_slice(k).get_dtype() for k in keys}
    assert keys == set(expected_shapes(unusual_encoder.config)) and COMFY_KEYS <= keys
    assert not any(k.startswith("encoder.encoder.") or k == "encoder.embed_tokens.weight" for k in keys)
    assert dtypes == {"F32"}
    stored = json.loads(metadata[METADATA_CONFIG_KEY])
    assert stored["model_type"] == "t5_compact" and stored["projection_act"] == "gelu"

    folder = convert(single, tmp_path / "back")
    for source in (single, folder):
        model = T5CompactEncoder.from_pretrained(source)
        assert model.config.projection_act == "gelu" and model.config.layer_norm_epsilon == 1e-5
        assert model.config.feed_forward_proj == "gated-silu"
        assert torch.equal(model(ids())[0], unusual_encoder(ids())[0])


def test_paper_release_to_comfyui_unwraps_keys_and_keeps_outputs(tmp_path):
    paper = paper_model()
    release = write_paper_release(tmp_path / "DistillT5", paper)
    single = convert(release, tmp_path / "distill_t5_base.safetensors", format="comfyui")
    with safe_open(str(single), "pt") as fh:
        keys = set(fh.keys())
    assert COMFY_KEYS <= keys and "encoder.block.0.layer.0.SelfAttention.q.weight" in keys
    assert not any(k.startswith("encoder.shared") or k.startswith("encoder.encoder.") for k in keys)
    assert torch.equal(T5CompactEncoder.from_pretrained(single)(ids())[0], paper(ids())[0])


@pytest.mark.parametrize(
    ("dtype", "tag", "torch_dtype"), [("fp16", "F16", torch.float16), ("bf16", "BF16", torch.bfloat16)]
)
def test_comfyui_dtype_is_uniform(tiny_encoder_dir, tmp_path, dtype, tag, torch_dtype):
    single = convert(tiny_encoder_dir, tmp_path / f"student_{dtype}.safetensors", dtype=dtype)
    with safe_open(str(single), "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {tag}
        assert json.loads(fh.metadata()[METADATA_CONFIG_KEY])["dtype"] == str(torch_dtype).removeprefix("torch.")
    loaded = T5CompactEncoder.from_pretrained(single)  # "auto": the file's dtype
    assert loaded.dtype == torch_dtype
    reference = tiny_compact_encoder()(ids())[0]
    assert torch.allclose(loaded(ids())[0].float(), reference, atol=5e-2, rtol=5e-2)


def test_folder_fp16_keeps_wo_in_fp32(tiny_encoder_dir, tmp_path):
    folder = convert(tiny_encoder_dir, tmp_path / "half", dtype="fp16")
    loaded = T5CompactEncoder.from_pretrained(folder)
    assert loaded.dtype == torch.float16
    assert loaded.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    assert torch.isfinite(loaded(ids())[0]).all()


def test_save_comfyui_from_a_model_in_memory(tmp_path):
    model = tiny_compact_encoder()
    path = save_comfyui(model, tmp_path / "sub" / "enc.safetensors")
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    assert torch.equal(T5CompactEncoder.from_pretrained(path)(ids())[0], model(ids())[0])
    with pytest.raises(ValueError, match="name it \\*.safetensors"):
        save_comfyui(model, tmp_path / "enc.bin")


def test_refuses_to_overwrite_or_to_guess_wrongly(tiny_encoder_dir, tmp_path):
    target = tmp_path / "exists.safetensors"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        convert(tiny_encoder_dir, target)
    assert target.read_bytes() == b"keep me"
    convert(tiny_encoder_dir, target, overwrite=True)
    assert T5CompactEncoder.from_pretrained(target).config.d_model == 16
    with pytest.raises(ValueError, match="writes one file"):
        convert(tiny_encoder_dir, tmp_path / "folder", format="comfyui")
    with pytest.raises(ValueError, match="writes a directory"):
        convert(tiny_encoder_dir, tmp_path / "x.safetensors", format="folder")
    with pytest.raises(ValueError, match="unknown format"):
        convert(tiny_encoder_dir, tmp_path / "y", format="gguf")
    with pytest.raises(ValueError, match="the destination is the source"):
        convert(tiny_encoder_dir, tiny_encoder_dir, overwrite=True)


def test_corrupt_metadata_config_is_reported(tmp_path):
    model = tiny_compact_encoder()
    path = tmp_path / "bad_meta.safetensors"
    save_file(comfyui_state_dict(model), path, metadata={METADATA_CONFIG_KEY: "{oops"})
    with pytest.raises(CorruptCheckpointError, match=f"{path}: the 't5_compact_config' metadata entry is not JSON"):
        T5CompactEncoder.from_pretrained(path)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> bytes), to show a destination was left untouched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_never_replaces_a_folder_by_a_file_or_a_file_by_a_folder(tiny_encoder_dir, tmp_path, capsys):
    folder = tmp_path / "x.safetensors"  # a folder that happens to end in .safetensors
    (folder / "keep").mkdir(parents=True)
    (folder / "keep" / "me.txt").write_text("precious")
    plain = tmp_path / "out"
    plain.write_text("a plain file")
    before = snapshot(tmp_path)
    assert main(["convert", str(tiny_encoder_dir), str(folder), "--overwrite"]) == 2
    assert f"{folder}: is a folder" in capsys.readouterr().err
    assert main(["convert", str(tiny_encoder_dir), str(plain), "--format", "folder", "--overwrite"]) == 2
    assert f"{plain}: is a file" in capsys.readouterr().err
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.safetensors"]


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_outputs_follow_the_umask_not_0600(tiny_encoder_dir, tmp_path, mask):
    old = os.umask(mask)
    try:
        convert(tiny_encoder_dir, tmp_path / "enc.safetensors")
        convert(tiny_encoder_dir, tmp_path / "enc")
        convert(tiny_encoder_dir, tmp_path / "enc", overwrite=True)  # into the existing folder
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "enc.safetensors") == 0o666 & ~mask
    assert mode(tmp_path / "enc") == 0o777 & ~mask
    assert {mode(f) for f in (tmp_path / "enc").iterdir()} == {0o666 & ~mask}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "enc.safetensors"]  # no temp file left


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("name", ["enc.safetensors", "enc"])
def test_an_interrupted_convert_leaves_nothing_beside_the_destination(
    tiny_encoder_dir, tmp_path, monkeypatch, capsys, error, name
):
    import safetensors.torch

    real = safetensors.torch.save_file

    def full_disk(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)  # the bytes are written, then the disk "fills up"
        raise error

    monkeypatch.setattr("t5_compact.convert.save_file", full_disk)
    monkeypatch.setattr("transformers.modeling_utils.safe_save_file", full_disk)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["convert", str(tiny_encoder_dir), str(out / name)])
    assert code == (130 if isinstance(error, KeyboardInterrupt) else 2)
    err = capsys.readouterr().err.strip().splitlines()  # (after transformers' "Writing model shards" bar)
    assert [line for line in err if line.startswith("t5-compact")] == err[-1:], err
    assert "Traceback" not in "\n".join(err) and err[-1].startswith("t5-compact convert: "), err
    assert list(out.iterdir()) == []


def test_a_killed_convert_leaves_one_partial_folder_that_the_next_run_removes(tiny_encoder_dir, tmp_path):
    leftover = tmp_path / "enc.safetensors.partial"  # what a SIGKILL during the write leaves
    leftover.mkdir()
    (leftover / "enc.safetensors").write_bytes(b"\0" * 100)
    (leftover / ".tmpAbC123").write_bytes(b"\0" * 100)
    convert(tiny_encoder_dir, tmp_path / "enc.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.safetensors"]
