"""One loader for every format: our folder, the paper's release, single files, `.pth`, hub ids from the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import T5Config, T5EncoderModel
from transformers.models.t5.modeling_t5 import T5PreTrainedModel

from t5_compact import T5CompactEncoder
from t5_compact.errors import CheckpointKeysError
from t5_compact.loading import looks_like_repo_id, read_checkpoint, resolve_dtype
from t5_compact.tiny import TINY_T5_VOCAB, tiny_compact_encoder

# --- the paper's release, re-implemented from its description (REFERENCE.md section 1) ----------------------------

PAPER_GEOMETRY = dict(vocab_size=TINY_T5_VOCAB, d_model=16, d_kv=8, d_ff=32, num_heads=2, num_layers=2)
PAPER_OUT_DIM = 32  # their projector: Linear(in, out) -> ReLU -> Dropout(0.1) -> Linear(out, out)


class PaperT5EncoderWithProjection(T5PreTrainedModel):
    """The paper's class: a whole `T5EncoderModel` as `encoder`, then `final_projection`; returns a 1-tuple."""

    config_class = T5Config

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.encoder = T5EncoderModel(config)
        out_dim = config.project_out_dim
        self.final_projection = nn.Sequential(
            nn.Linear(config.project_in_dim, out_dim, bias=False),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(out_dim, out_dim, bias=False),
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (self.final_projection(hidden),)


def paper_model(seed: int = 0) -> PaperT5EncoderWithProjection:
    """A random tiny model of the paper's class, in eval mode."""
    config = T5Config(**PAPER_GEOMETRY, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    config.project_in_dim, config.project_out_dim = PAPER_GEOMETRY["d_model"], PAPER_OUT_DIM
    torch.manual_seed(seed)
    model = PaperT5EncoderWithProjection(config).eval()
    with torch.no_grad():  # random projector weights of a realistic scale
        for layer in (model.final_projection[0], model.final_projection[3]):
            layer.weight.normal_(0, layer.in_features**-0.5)
    return model


def paper_config_json(model: PaperT5EncoderWithProjection) -> dict:
    """Their published config.json: flan-t5 fields, model_type "t5", project dims, their architecture name."""
    fields = model.config.to_dict()
    keep = (
        "vocab_size d_model d_kv d_ff num_layers num_decoder_layers num_heads relative_attention_num_buckets "
        "relative_attention_max_distance dropout_rate layer_norm_epsilon initializer_factor feed_forward_proj "
        "dense_act_fn is_gated_act is_encoder_decoder use_cache pad_token_id eos_token_id tie_word_embeddings"
    ).split()
    config = {k: fields[k] for k in keep if k in fields}
    config.update(
        architectures=["T5EncoderWithProjection"],
        model_type="t5",
        project_in_dim=model.config.project_in_dim,
        project_out_dim=model.config.project_out_dim,
        torch_dtype="float32",
        transformers_version="4.44.0",
    )
    return config


def paper_state_dict(model: PaperT5EncoderWithProjection, tied: bool) -> dict[str, torch.Tensor]:
    """Their safetensors keys: `encoder.shared.weight`, `encoder.encoder.block...`, `final_projection.0/.3`."""
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state["encoder.encoder.embed_tokens.weight"] = state["encoder.shared.weight"].clone()
    if not tied:
        del state["encoder.encoder.embed_tokens.weight"]
    return state


def write_paper_release(folder: Path, model: PaperT5EncoderWithProjection, tied: bool = True) -> Path:
    """`config.json` + `model.safetensors` exactly as the paper's hub repos hold them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(paper_config_json(model), indent=2))
    save_file(paper_state_dict(model, tied), folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def ids(batch: int = 2, seq: int = 11) -> torch.Tensor:
    return torch.randint(0, TINY_T5_VOCAB, (batch, seq), generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def paper():
    return paper_model()


# --- the paper's layout -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False], ids=["with-tied-embed", "without-tied-embed"])
def test_paper_folder_gives_identical_outputs(paper, tmp_path, tied):
    folder = write_paper_release(tmp_path / "DistillT5", paper, tied=tied)
    keys = read_checkpoint(folder).shapes
    assert "encoder.shared.weight" in keys and "encoder.encoder.block.0.layer.0.SelfAttention.q.weight" in keys
    assert ("encoder.encoder.embed_tokens.weight" in keys) is tied
    ours = T5CompactEncoder.from_pretrained(folder)
    assert ours.config.model_type == "t5_compact" and ours.config.projection_out_dim == PAPER_OUT_DIM
    assert ours.config.projection_hidden_dim == PAPER_OUT_DIM and ours.config.projection_act == "relu"
    assert ours.dtype == torch.float32 and not ours.training
    x = ids()
    assert torch.equal(ours(x)[0], paper(x)[0])
    mask = torch.ones_like(x)
    mask[:, 7:] = 0
    assert torch.equal(ours(x, attention_mask=mask)[0], paper(x, mask)[0])


def test_paper_folder_file_alone_uses_its_folder_config(paper, tmp_path):
    folder = write_paper_release(tmp_path / "snapshot", paper)
    ours = T5CompactEncoder.from_pretrained(folder / "model.safetensors")
    assert ours.config.layer_norm_epsilon == paper.config.layer_norm_epsilon
    assert torch.equal(ours(ids())[0], paper(ids())[0])


def test_paper_config_disagreeing_with_weights_is_an_error(paper, tmp_path):
    folder = write_paper_release(tmp_path / "bad", paper)
    config = json.loads((folder / "config.json").read_text())
    config["num_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointKeysError, match=r"config\.json says num_layers=3 but the weights have num_layers=2"):
        T5CompactEncoder.from_pretrained(folder)


# --- single files, our folders, .pth -------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [False, True], ids=["unwrapped", "encoder-wrapper"])
@pytest.mark.parametrize("tied", [False, True], ids=["no-tied", "tied"])
def test_single_safetensors_without_config(tiny_encoder, tmp_path, wrapped, tied):
    state = {k: v.clone().contiguous() for k, v in tiny_encoder.state_dict().items()}
    if not tied:
        del state["encoder.embed_tokens.weight"]
    if wrapped:  # the paper's names: `encoder.` in front of the T5EncoderModel's keys
        state = {(k if k.startswith("final_projection.") else f"encoder.{k}"): v for k, v in state.items()}
    file = tmp_path / "student.safetensors"
    save_file(state, file)
    assert not (tmp_path / "config.json").exists()
    loaded = T5CompactEncoder.from_pretrained(file)
    x = ids()
    assert torch.equal(loaded(x)[0], tiny_encoder(x)[0])
    for key in ("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "projection_hidden_dim", "projection_out_dim"):
        assert getattr(loaded.config, key) == getattr(tiny_encoder.config, key)


def test_our_folder_round_trip(tiny_encoder_dir):
    reference = tiny_compact_encoder()
    loaded = T5CompactEncoder.from_pretrained(tiny_encoder_dir)
    assert torch.equal(loaded(ids())[0], reference(ids())[0])
    assert loaded.name_or_path == str(tiny_encoder_dir)
    assert loaded.get_input_embeddings() is loaded.shared and loaded.encoder.embed_tokens is loaded.shared


def test_sharded_folder(tiny_encoder, tmp_path):
    tiny_encoder.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("*.safetensors"))) > 1
    assert torch.equal(T5CompactEncoder.from_pretrained(tmp_path)(ids())[0], tiny_encoder(ids())[0])


def test_variant_file(tiny_encoder, tmp_path):
    tiny_encoder.half().save_pretrained(tmp_path, variant="fp16")
    loaded = T5CompactEncoder.from_pretrained(tmp_path, variant="fp16")
    assert loaded.dtype == torch.float16


@pytest.mark.parametrize("wrapped", [False, True], ids=["unwrapped", "encoder-wrapper"])
def test_pth_state_dict_with_weights_only(tiny_encoder, tmp_path, wrapped):
    state = tiny_encoder.state_dict()
    if wrapped:
        state = {"state_dict": {(k if k.startswith("final") else f"encoder.{k}"): v for k, v in state.items()}}
    file = tmp_path / "student.pth"
    torch.save(state, file)
    assert torch.equal(T5CompactEncoder.from_pretrained(file)(ids())[0], tiny_encoder(ids())[0])


# --- dtypes, devices and keyword arguments ------------------------------------------------------------------------


def test_dtype_arguments(tiny_encoder_dir):
    assert T5CompactEncoder.from_pretrained(tiny_encoder_dir, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert T5CompactEncoder.from_pretrained(tiny_encoder_dir, dtype="fp16").dtype == torch.float16
    assert T5CompactEncoder.from_pretrained(tiny_encoder_dir, torch_dtype="torch.bfloat16").dtype == torch.bfloat16
    assert T5CompactEncoder.from_pretrained(tiny_encoder_dir, torch_dtype="auto").dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        resolve_dtype("int3")


def test_auto_dtype_is_the_checkpoints(tiny_encoder, tmp_path):
    file = tmp_path / "bf16.safetensors"
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in tiny_encoder.state_dict().items()}
    del state["encoder.embed_tokens.weight"]
    save_file(state, file)
    loaded = T5CompactEncoder.from_pretrained(file)  # no dtype: "auto", as transformers 5
    assert loaded.dtype == torch.bfloat16 and loaded.config.dtype == torch.bfloat16
    assert T5CompactEncoder.from_pretrained(file, torch_dtype=torch.float32).dtype == torch.float32


def test_device_and_device_map(tiny_encoder_dir):
    for kwargs in ({"device": "cpu"}, {"device_map": {"": "cpu"}}, {"device_map": "cpu"}, {"device_map": "auto"}):
        model = T5CompactEncoder.from_pretrained(tiny_encoder_dir, **kwargs)
        expected = "cuda" if kwargs.get("device_map") == "auto" and torch.cuda.is_available() else "cpu"
        assert model.device.type == expected, kwargs
    with pytest.raises(ValueError, match="one device"):
        T5CompactEncoder.from_pretrained(tiny_encoder_dir, device_map={"encoder": "cpu", "final_projection": "cpu"})


def test_diffusers_loading_kwargs_are_accepted_and_unknown_ones_rejected(tiny_encoder_dir):
    # What diffusers 0.42's `load_sub_model` passes to a transformers model.
    kwargs = dict(dtype=torch.float32, device_map=None, max_memory=None, offload_folder=None, use_safetensors=None)
    assert isinstance(T5CompactEncoder.from_pretrained(tiny_encoder_dir, low_cpu_mem_usage=True, **kwargs), nn.Module)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['nonsense'\\]"):
        T5CompactEncoder.from_pretrained(tiny_encoder_dir, nonsense=1)


# --- hub ids, from the local cache while offline -------------------------------------------------------------------


def write_hub_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """The huggingface_hub cache layout: blobs, a snapshot of symlinks, and `refs/main` naming the commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for i, (name, source) in enumerate(files.items()):
        blob = repo / "blobs" / f"{i:040x}"
        shutil.copyfile(source, blob)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    return snapshot


def test_hub_id_resolves_from_the_local_cache_offline(paper, tmp_path, monkeypatch):
    release = write_paper_release(tmp_path / "release", paper)
    cache = tmp_path / "hub"
    write_hub_cache(cache, "LifuWang/DistillT5", {f: release / f for f in ("config.json", "model.safetensors")})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder called LifuWang/DistillT5
    # The exact call, against the default cache location...
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    compact = T5CompactEncoder.from_pretrained("LifuWang/DistillT5", torch_dtype=torch.bfloat16)
    assert compact.dtype == torch.bfloat16
    assert torch.allclose(compact(ids())[0].float(), paper(ids())[0], atol=0.1, rtol=0.05)
    # ... and with an explicit cache_dir.
    exact = T5CompactEncoder.from_pretrained("LifuWang/DistillT5", cache_dir=cache, torch_dtype=torch.float32)
    assert torch.equal(exact(ids())[0], paper(ids())[0])


def test_an_existing_local_path_wins_over_a_repo_id(tiny_encoder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_encoder.save_pretrained(tmp_path / "acme" / "student")
    assert T5CompactEncoder.from_pretrained("acme/student").config.d_model == 16


@pytest.mark.parametrize(
    ("text", "is_repo"),
    [
        ("LifuWang/DistillT5", True),
        ("google/flan-t5-base", True),
        ("student.safetensors", False),
        ("out/student.safetensors", False),
        ("./student", False),
        ("/abs/student", False),
        ("a/b/c", False),
        ("../x", False),
        ("model", False),
    ],
)
def test_repo_id_detection(text, is_repo):
    assert looks_like_repo_id(text) is is_repo
