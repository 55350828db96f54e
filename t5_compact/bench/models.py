"""Encoders to benchmark: parse `--encoders` entries and build each one, random geometries without slow init.

An entry is `[LABEL=]SOURCE` where SOURCE is
- `t5-xxl` (or `xxl`): the T5-XXL teacher encoder's exact geometry (transformers `T5EncoderModel`), random weights;
- `small`, `base`, `large`, `xl`: a compact student of that paper geometry (`T5CompactEncoder`), random weights;
- a folder, `.safetensors` file or hub id: a compact encoder (any format `T5CompactEncoder.from_pretrained` reads),
  or a plain T5 encoder such as `google/t5-v1_1-xxl` or a pipeline's `text_encoder_2` folder (real teacher weights);
- `plain:SOURCE` for a compact SOURCE: the same weights run by plain transformers (`T5EncoderModel` + a
  `torch.nn.Sequential` projector, the paper's own class layout), to show our class adds no overhead;
- `tiny-t5`, `tiny` (for tests): a small T5 encoder and a smaller compact student, random weights.

Random weights are never initialised the slow way: the model is built on the meta device, cast, materialised with
`to_empty` and filled by copying one random chunk (scaled per tensor), which costs about one memory write.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import T5Config, T5EncoderModel

from ..configuration_t5_compact import STUDENT_SIZES, T5_GEOMETRIES, T5CompactConfig, compact_config
from ..errors import EncoderNotFoundError, UsageError
from ..geometry import canonical_key
from ..loading import cast_encoder
from ..modeling_t5_compact import T5CompactEncoder

TEACHER_NAMES = ("t5-xxl", "xxl")
# Test-only geometries: big enough that the teacher-like one is clearly heavier, small enough for seconds-long tests.
TINY_T5 = dict(vocab_size=1024, d_model=256, d_kv=32, d_ff=1024, num_heads=8, num_layers=4)
TINY_COMPACT = dict(
    vocab_size=1024, d_model=64, d_kv=16, d_ff=128, num_heads=4, num_layers=2, projection_hidden_dim=256
)
TINY_NAMES = ("tiny-t5", "tiny")
BUILTIN_NAMES = (*TEACHER_NAMES, *STUDENT_SIZES, *TINY_NAMES)
_CHUNK = 1 << 20  # elements of the random chunk that fills every tensor


@dataclass(frozen=True)
class EncoderSpec:
    """One `--encoders` entry: what to build and how to call it in tables."""

    label: str
    source: str
    kind: str  # "t5": a plain T5 encoder (the teacher); "compact": a T5CompactEncoder; "plain": its plain twin
    random: bool  # a named geometry with random weights (no checkpoint)

    @property
    def is_teacher_geometry(self) -> bool:
        """True for the T5-XXL encoder, named or loaded (d_model 4096 is checked after building)."""
        return self.kind == "t5"


def parse_encoders(text: str) -> list[EncoderSpec]:
    """Parse a comma-separated `--encoders` value; labels must be unique."""
    specs = [parse_encoder(item.strip()) for item in text.split(",") if item.strip()]
    if not specs:
        raise UsageError("--encoders: no encoder given")
    labels = [s.label for s in specs]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise UsageError(f"--encoders: duplicate labels {duplicates}; name entries with LABEL=SOURCE")
    return specs


def parse_encoder(text: str) -> EncoderSpec:
    """Parse one `[LABEL=]SOURCE` entry (see the module docstring)."""
    label, sep, source = text.partition("=")
    if not sep:
        label, source = "", text
    label, source = label.strip(), source.strip()
    if not source:
        raise UsageError(f"--encoders: empty source in {text!r}")
    if source.startswith("plain:"):
        inner = parse_encoder(source.removeprefix("plain:"))
        if inner.kind != "compact":
            raise UsageError(f"--encoders: plain:{inner.source} needs a compact encoder, got a plain T5 encoder")
        return EncoderSpec(label or f"{inner.label} (plain transformers)", inner.source, "plain", inner.random)
    name = source.lower()
    if name in TEACHER_NAMES:
        return EncoderSpec(label or "t5-xxl", "t5-xxl", "t5", True)
    if name in STUDENT_SIZES:
        return EncoderSpec(label or name, name, "compact", True)
    if name == "tiny-t5":
        return EncoderSpec(label or name, name, "t5", True)
    if name == "tiny":
        return EncoderSpec(label or name, name, "compact", True)
    return EncoderSpec(label or source, source, detect_kind(source), False)


def detect_kind(source: str) -> str:
    """`"t5"` for a plain T5 encoder checkpoint, `"compact"` for anything the compact loader reads."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                keys = list(fh.keys())
            if not any("final_projection." in k for k in keys):
                raise ValueError(
                    f"{source}: a single-file plain T5 encoder is not supported; pass its folder (with config.json)"
                )
        return "compact"
    if path.is_dir():
        config_file = path / "config.json"
        try:
            config = json.loads(config_file.read_text()) if config_file.exists() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise EncoderNotFoundError(f"{config_file}: not a readable JSON file ({err})") from err
    else:
        from ..pipelines import read_pipeline_config
        from ..sources import looks_like_repo_id

        if not looks_like_repo_id(source):
            raise EncoderNotFoundError(
                f"--encoders: {source}: no such file or folder, and not a built-in name ({', '.join(BUILTIN_NAMES)}) "
                "or a hub repo id (owner/name)"
            )
        config = read_pipeline_config(source, "config.json")
    return "t5" if _is_plain_t5(config) else "compact"


def _is_plain_t5(config: dict) -> bool:
    from ..geometry import is_paper_config

    return config.get("model_type") == "t5" and not is_paper_config(config)


class PlainT5WithProjection(nn.Module):
    """The paper's class layout in plain transformers: a `T5EncoderModel` as `encoder`, then `final_projection`."""

    _keep_in_fp32_modules = ["wo"]

    def __init__(self, config: T5CompactConfig):
        super().__init__()
        t5_fields = {k: v for k, v in config.to_dict().items() if k in T5Config.__dataclass_fields__}
        t5_fields.pop("model_type", None)
        t5_fields.update(is_encoder_decoder=False, use_cache=False)
        self.config = config
        self.encoder = T5EncoderModel(T5Config(**t5_fields))
        act = {"relu": nn.ReLU, "silu": nn.SiLU}.get(config.projection_act, nn.GELU)
        self.final_projection = nn.Sequential(
            nn.Linear(config.d_model, config.projection_hidden_dim, bias=config.projection_bias),
            act(),
            nn.Dropout(config.projection_dropout),
            nn.Linear(config.projection_hidden_dim, config.projection_out_dim, bias=config.projection_bias),
        )

    def forward(self, input_ids: torch.LongTensor) -> tuple[torch.Tensor]:
        """`[batch, seq]` ids to `([batch, seq, projection_out_dim],)`."""
        hidden = self.encoder(input_ids=input_ids).last_hidden_state
        return (self.final_projection(hidden.to(self.final_projection[0].weight.dtype)),)


def plain_twin(compact: T5CompactEncoder) -> PlainT5WithProjection:
    """A `PlainT5WithProjection` sharing `compact`'s weight tensors (same values, dtypes and device)."""
    with torch.device("meta"):
        twin = PlainT5WithProjection(compact.config)
    state = {}
    for key, value in compact.state_dict().items():
        if key == "encoder.embed_tokens.weight":
            continue
        state[key if key.startswith("final_projection.") else f"encoder.{key}"] = value
    twin.load_state_dict(state, strict=False, assign=True)
    twin.encoder.set_input_embeddings(twin.encoder.shared)
    missing = [k for k, v in twin.state_dict().items() if v.is_meta]
    if missing:
        raise RuntimeError(f"plain twin: tensors left unset: {missing[:5]}")
    return twin.eval()


def fill_random_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter cheap random values of a sensible scale (unit-variance inputs stay unit-variance).

    One uniform chunk (per dtype) is drawn from `seed`; each tensor copies it from an offset derived from its name,
    scaled by `sqrt(3 / fan_in)` (weights; queries also by `d_kv ** -0.5`, as T5 folds the attention scaling into
    its query init), 1 (embeddings) or 0.1 (relative attention bias); norms get ones, biases zeros. Without the
    query scaling, attention logits are ~8x too large and softmax underflows into denormal floats, which CPUs
    process many times slower: the timings would not be those of a trained model.
    Deterministic in (seed, canonical parameter name, shape, dtype), so a compact encoder and its plain twin
    (`encoder.`-prefixed names) get the same values.
    """
    chunks: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
    d_kv = model.config.d_kv
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("layer_norm.weight") or name.endswith("norm.weight"):
                param.fill_(1.0)
                continue
            if name.endswith(".bias"):
                param.zero_()
                continue
            if "relative_attention_bias" in name:
                scale = 0.1
            elif param.dim() == 2 and "shared" not in name and "embed" not in name:
                scale = (3.0 / param.shape[1]) ** 0.5
                if name.endswith("SelfAttention.q.weight"):
                    scale *= d_kv**-0.5
            else:
                scale = 1.0
            key = (param.dtype, param.device)
            if key not in chunks:  # drawn in the tensor's dtype, so the fill needs no large temporaries
                generator = torch.Generator().manual_seed(seed)
                half = torch.empty(_CHUNK, dtype=param.dtype).uniform_(-1, 1, generator=generator)
                chunks[key] = torch.cat([half, half]).to(param.device)
            chunk = chunks[key]
            flat = param.view(-1)
            start = zlib.crc32(canonical_key(name).encode()) % _CHUNK
            for begin in range(0, flat.numel(), _CHUNK):
                n = min(_CHUNK, flat.numel() - begin)
                torch.mul(chunk[start : start + n], scale, out=flat[begin : begin + n])
    return model


def _materialise(model: nn.Module, dtype: torch.dtype, device: torch.device, seed: int) -> nn.Module:
    """Cast a meta-device model, allocate it on `device` without initialising, re-tie embeddings, fill it."""
    cast_encoder(model, dtype)
    model.to_empty(device=device)
    retie(model)
    fill_random_(model, seed)
    return model.eval()


def retie(model: nn.Module) -> None:
    """Re-tie T5's `encoder.embed_tokens` to `shared` (`to_empty` and state-dict assignment untie them)."""
    t5 = model.encoder if isinstance(model, PlainT5WithProjection) else model
    t5.set_input_embeddings(t5.shared)


def teacher_config(name: str = "t5-xxl") -> T5Config:
    """The T5 encoder config of the T5-XXL teacher (`t5-v1_1-xxl`), or of the `tiny-t5` test geometry."""
    geometry = TINY_T5 if name == "tiny-t5" else {**T5_GEOMETRIES["xxl"], "vocab_size": 32128}
    return T5Config(**geometry, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)


def student_config(name: str) -> T5CompactConfig:
    """The config of a named student geometry (`small`/`base`/`large`/`xl`, or `tiny` for tests)."""
    if name == "tiny":
        return T5CompactConfig(**TINY_COMPACT, projection_out_dim=TINY_T5["d_model"])
    return compact_config(name)


def build_encoder(
    spec: EncoderSpec, dtype: torch.dtype, device: torch.device | str = "cpu", seed: int = 0
) -> nn.Module:
    """Build (random geometry) or load (checkpoint) the encoder `spec` names, in `dtype` on `device`, in eval mode."""
    device = torch.device(device)
    if spec.random and spec.kind == "t5":
        with torch.device("meta"):
            model = T5EncoderModel(teacher_config(spec.source))
        return _materialise(model, dtype, device, seed)
    if spec.random:
        with torch.device("meta"):
            config = student_config(spec.source)
            model = PlainT5WithProjection(config) if spec.kind == "plain" else T5CompactEncoder(config)
        return _materialise(model, dtype, device, seed)
    if spec.kind == "t5":
        model = T5EncoderModel.from_pretrained(spec.source, dtype=dtype)
        model = cast_encoder(model, dtype).to(device).eval()
    else:
        model = T5CompactEncoder.from_pretrained(spec.source, torch_dtype=dtype, device=device).eval()
    return plain_twin(model) if spec.kind == "plain" else model


def vocab_size(model: nn.Module) -> int:
    """The token vocabulary of a T5 / compact / plain-twin encoder."""
    return model.config.vocab_size


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (the tied embedding copy counted once)."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


def encode(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Embeddings `[batch, seq, width]` of `input_ids` (no attention mask, as the diffusers pipelines call it)."""
    with torch.inference_mode():
        return model(input_ids=input_ids)[0]
