"""The compact T5 built on ComfyUI's own text-encoder machinery, and the FLUX / SD3 / T5-only compositions.

The encoder is ComfyUI's `comfy.text_encoders.t5.T5` (no copy) with the projector added from the same
`operations` (`comfy.ops`), wrapped in `SDClipModel` and `comfy.sd.CLIP`: casting, low-VRAM, offloading and
model management apply to the whole encoder, projector included. Compositions reuse the stock FLUX / SD3 /
PixArt classes and tokenizers (`FluxClipModel`, `SD3ClipModel`, ...) with our T5 in their `t5xxl` slot, so
tokenization (FLUX pads T5 to >= 256 tokens, SD3 to >= 77), token weights and long prompts behave as stock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import comfy.model_management
import comfy.sd
import comfy.text_encoders.cogvideo
import comfy.text_encoders.flux
import comfy.text_encoders.genmo
import comfy.text_encoders.hidream
import comfy.text_encoders.long_clipl
import comfy.text_encoders.lt
import comfy.text_encoders.pixart_t5
import comfy.text_encoders.sd3_clip
import comfy.text_encoders.t5
import comfy.utils
import torch
from comfy import sd1_clip

from . import logic
from .core import errors
from .loader import CompactFile, load_compact_file

_ACTIVATIONS = {
    "relu": torch.nn.ReLU,
    "gelu": torch.nn.GELU,
    "gelu_new": lambda: torch.nn.GELU(approximate="tanh"),
    "silu": torch.nn.SiLU,
}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class CompactT5(comfy.text_encoders.t5.T5):
    """ComfyUI's T5 encoder followed by the projector `final_projection` (Linear -> act -> Linear).

    Parameter names equal the checkpoint's (`shared`, `encoder.*`, `final_projection.{0,3}`). Works with any
    calling convention of `T5.forward`, including the current `input_ids=None, embeds=...`.
    """

    def __init__(self, config_dict: Mapping[str, Any], dtype: torch.dtype | None, device, operations) -> None:
        super().__init__(dict(config_dict), dtype, device, operations)
        bias = config_dict["projection_bias"]
        hidden, out = config_dict["projection_hidden_dim"], config_dict["projection_out_dim"]
        self.final_projection = torch.nn.Sequential(
            operations.Linear(config_dict["d_model"], hidden, bias=bias, dtype=dtype, device=device),
            _ACTIVATIONS[config_dict["projection_act"]](),
            torch.nn.Identity(),  # the training-time dropout; keeps the checkpoint's indices 0 and 3
            operations.Linear(hidden, out, bias=bias, dtype=dtype, device=device),
        )

    def forward(self, input_ids, attention_mask, embeds=None, num_tokens=None, **kwargs):
        """Project the final (and any requested intermediate) hidden state to the diffusion model's width."""
        out, intermediate = super().forward(input_ids, attention_mask, embeds=embeds, num_tokens=num_tokens, **kwargs)
        if intermediate is not None:
            intermediate = self.final_projection(intermediate)
        return self.final_projection(out), intermediate


class CompactT5Model(sd1_clip.SDClipModel):
    """`SDClipModel` around `CompactT5`, configured like the stock `T5XXLModel` (no attention mask)."""

    def __init__(
        self,
        t5_config: Mapping[str, Any],
        device="cpu",
        layer="last",
        layer_idx=None,
        dtype=None,
        attention_mask: bool = False,
        model_options: Mapping[str, Any] | None = None,
    ) -> None:
        model_options = {**(model_options or {}), "model_name": "t5_compact"}
        super().__init__(
            device=device,
            layer=layer,
            layer_idx=layer_idx,
            textmodel_json_config=dict(t5_config),
            dtype=dtype,
            special_tokens={"end": 1, "pad": 0},
            model_class=CompactT5,
            enable_attention_masks=attention_mask,
            return_attention_masks=attention_mask,
            model_options=model_options,
        )


class CompactPixArtT5Model(CompactT5Model):
    """For PixArt / Chroma: the negative ("empty") prompt is all pad tokens, as in the stock PixArt T5."""

    def gen_empty_tokens(self, special_tokens, *args, **kwargs):
        special_tokens = {k: v for k, v in special_tokens.items() if k != "end"}
        return sd1_clip.gen_empty_tokens(special_tokens, *args, **kwargs)


def _t5_dtype(dtype_t5: str | None, forced: bool, dtype, device) -> torch.dtype:
    """The stock choice (`pick_weight_dtype` of the file's dtype) unless the node forces one."""
    wanted = _DTYPES.get(dtype_t5) if dtype_t5 else None
    if forced and wanted is not None:
        return wanted
    return comfy.model_management.pick_weight_dtype(wanted, dtype, device)


class CompactFluxClipModel(comfy.text_encoders.flux.FluxClipModel):
    """FLUX's CLIP-L + T5 composition with a compact T5 in the `t5xxl` slot.

    Only `__init__` differs from the stock class (which would build a T5-XXL); encoding, options and state-dict
    routing are inherited.
    """

    def __init__(self, t5_config, dtype_t5=None, force_dtype_t5=False, device="cpu", dtype=None, model_options=None):
        torch.nn.Module.__init__(self)
        model_options = model_options or {}
        dtype_t5 = _t5_dtype(dtype_t5, force_dtype_t5, dtype, device)
        self.clip_l = sd1_clip.SDClipModel(
            device=device, dtype=dtype, return_projected_pooled=False, model_options=model_options
        )
        self.t5xxl = CompactT5Model(t5_config, device=device, dtype=dtype_t5, model_options=model_options)
        self.dtypes = {dtype, dtype_t5}


class CompactSD3ClipModel(comfy.text_encoders.sd3_clip.SD3ClipModel):
    """SD3's CLIP-L + CLIP-G + T5 composition with a compact T5 in the `t5xxl` slot."""

    def __init__(
        self,
        t5_config,
        dtype_t5=None,
        force_dtype_t5=False,
        clip_l=True,
        clip_g=True,
        device="cpu",
        dtype=None,
        model_options=None,
    ):
        model_options = model_options or {}
        super().__init__(
            clip_l=clip_l, clip_g=clip_g, t5=False, device=device, dtype=dtype, model_options=model_options
        )
        dtype_t5 = _t5_dtype(dtype_t5, force_dtype_t5, dtype, device)
        self.t5_attention_mask = False
        self.t5xxl = CompactT5Model(t5_config, device=device, dtype=dtype_t5, model_options=model_options)
        self.dtypes.add(dtype_t5)


class CompactPixArtClipModel(sd1_clip.SD1ClipModel):
    """The stock PixArt / Chroma T5-only composition with a compact T5."""

    t5_model: type = CompactPixArtT5Model
    t5_options: dict[str, Any] = {}

    def __init__(self, t5_config, dtype_t5=None, force_dtype_t5=False, device="cpu", dtype=None, model_options=None):
        dtype = _t5_dtype(dtype_t5, force_dtype_t5, dtype, device)
        super().__init__(
            device=device,
            dtype=dtype,
            model_options=model_options or {},
            name="t5xxl",
            clip_model=self.t5_model,
            t5_config=t5_config,
            **self.t5_options,
        )


class CompactMochiClipModel(CompactPixArtClipModel):
    """The stock Mochi / LTX-Video T5-only composition (`genmo.mochi_te`: T5 with the attention mask)."""

    t5_model = CompactT5Model
    t5_options = {"attention_mask": True}


class CompactCogVideoXClipModel(CompactPixArtClipModel):
    """The stock CogVideoX T5-only composition (`cogvideo.cogvideo_te`: plain T5, no mask)."""

    t5_model = CompactT5Model


class CompactHiDreamClipModel(comfy.text_encoders.hidream.HiDreamTEModel):
    """The stock HiDream composition with T5 only (no CLIP-L/G, no Llama), a compact T5 with the attention mask."""

    def __init__(self, t5_config, dtype_t5=None, force_dtype_t5=False, device="cpu", dtype=None, model_options=None):
        model_options = model_options or {}
        super().__init__(
            clip_l=False, clip_g=False, t5=False, llama=False, device=device, dtype=dtype, model_options=model_options
        )
        dtype_t5 = _t5_dtype(dtype_t5, force_dtype_t5, dtype, device)
        self.t5xxl = CompactT5Model(
            t5_config, device=device, dtype=dtype_t5, attention_mask=True, model_options=model_options
        )
        self.dtypes.add(dtype_t5)

    def load_sd(self, sd):
        """The stock routing recognises T5 by T5-XXL's 24th block; here the only encoder is the compact T5."""
        return self.t5xxl.load_sd(sd)


class _Target:
    """What `comfy.sd.CLIP` builds from: a model class, a tokenizer class and their parameters."""

    def __init__(self, clip: type, tokenizer: type, params: dict[str, Any]) -> None:
        self.clip, self.tokenizer, self.params = clip, tokenizer, params


# family -> (composition, tokenizer, composition kwargs)
_FAMILIES: dict[str, tuple[type, type, dict[str, Any]]] = {
    "flux": (CompactFluxClipModel, comfy.text_encoders.flux.FluxTokenizer, {}),
    "sd3": (CompactSD3ClipModel, comfy.text_encoders.sd3_clip.SD3Tokenizer, {}),
    "sd3_t5_only": (
        CompactSD3ClipModel,
        comfy.text_encoders.sd3_clip.SD3Tokenizer,
        {"clip_l": False, "clip_g": False},
    ),
    "pixart": (CompactPixArtClipModel, comfy.text_encoders.pixart_t5.PixArtTokenizer, {}),
    "ltxv": (CompactMochiClipModel, comfy.text_encoders.lt.LTXVT5Tokenizer, {}),
    "mochi": (CompactMochiClipModel, comfy.text_encoders.genmo.MochiT5Tokenizer, {}),
    "cogvideox": (CompactCogVideoXClipModel, comfy.text_encoders.cogvideo.CogVideoXTokenizer, {}),
    "hidream": (CompactHiDreamClipModel, comfy.text_encoders.hidream.HiDreamTokenizer, {}),
}


def build_clip(
    family: str,
    compact: CompactFile,
    clip_state_dicts: list[dict[str, torch.Tensor]],
    dtype_t5: str | None,
    force_dtype_t5: bool,
    model_options: dict[str, Any],
    embedding_directory=None,
    disable_dynamic: bool = False,
) -> comfy.sd.CLIP:
    """A `comfy.sd.CLIP` for `family` from loaded CLIP state dicts and a loaded compact T5 (as `load_clip` does)."""
    clip_cls, tokenizer_cls, extra = _FAMILIES[family]
    state_dicts = [*clip_state_dicts, compact.state_dict]
    tokenizer_data: dict[str, Any] = {}
    parameters = 0
    for sd in state_dicts:
        parameters += comfy.utils.calculate_parameters(sd)
        tokenizer_data, model_options = comfy.text_encoders.long_clipl.model_options_long_clip(
            sd, tokenizer_data, model_options
        )
    params = {"t5_config": compact.config, "dtype_t5": dtype_t5, "force_dtype_t5": force_dtype_t5, **extra}
    return comfy.sd.CLIP(
        _Target(clip_cls, tokenizer_cls, params),
        embedding_directory=embedding_directory,
        parameters=parameters,
        tokenizer_data=tokenizer_data,
        state_dict=state_dicts,
        model_options=model_options,
        disable_dynamic=disable_dynamic,
    )


def load_compact_clip(
    family: str,
    compact_t5: tuple[str, str],
    clips: tuple[tuple[str, str, str], ...],
    dtype: str,
    model_options: dict[str, Any],
    embedding_directory=None,
    disable_dynamic: bool = False,
) -> comfy.sd.CLIP:
    """Load the files and build the CLIP; every error names the node slot and the file.

    `compact_t5` is (file name, path); `clips` are (slot, file name, path). Like the stock `comfy.sd.load_clip`,
    it registers itself as the patcher's `cached_patcher_init`, so ComfyUI can rebuild the text encoder
    (non-dynamic clones for hooks, multi-GPU copies).
    """
    name, path = compact_t5
    try:
        compact = load_compact_file(
            path,
            expected_width=logic.T5XXL_WIDTH,
            family=logic.FAMILY_NAMES[family],
            load_file=lambda p: comfy.utils.load_torch_file(p, safe_load=True),
        )
    except (errors.CheckpointError, errors.WidthMismatchError, errors.EncoderNotFoundError) as err:
        raise logic.slot_error("compact_t5", name, err) from err
    clip_sds = []
    for slot, clip_name, clip_path in clips:
        try:
            clip_sds.append(load_clip_file(clip_path, slot))
        except Exception as err:  # noqa: BLE001 - name the file whatever went wrong reading it
            raise logic.slot_error(slot, clip_name, err) from err
    dtype_t5, forced = logic.resolve_dtype_option(dtype, compact.stored_dtype)
    clip = build_clip(family, compact, clip_sds, dtype_t5, forced, model_options, embedding_directory, disable_dynamic)
    args = (family, compact_t5, clips, dtype, model_options, embedding_directory)
    clip.patcher.cached_patcher_init = (load_compact_clip_patcher, args)
    return clip


def load_compact_clip_patcher(*args, disable_dynamic: bool = False):
    """A freshly loaded CLIP's patcher: the `cached_patcher_init` factory (as `comfy.sd.load_clip_model_patcher`)."""
    return load_compact_clip(*args, disable_dynamic=disable_dynamic).patcher


def load_clip_file(path: str, slot: str) -> dict[str, torch.Tensor]:
    """A stock CLIP-L / CLIP-G file as `comfy.sd.load_clip` reads it; raise naming the file if it is another model."""
    sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    sd, _ = comfy.utils.convert_old_quants(sd, model_prefix="", metadata=metadata)
    if "transformer.resblocks.0.ln_1.weight" in sd:  # OpenCLIP layout
        sd = comfy.utils.clip_text_transformers_convert(sd, "", "")
    elif "text_projection" in sd:  # saved by old CLIPSave nodes
        sd["text_projection.weight"] = sd["text_projection"].transpose(0, 1)
    found = comfy.sd.detect_te_model(sd)
    want = {"clip_l": comfy.sd.TEModel.CLIP_L, "clip_g": comfy.sd.TEModel.CLIP_G}[slot]
    if found != want:
        what = found.name if found is not None else "not a text encoder ComfyUI recognises"
        hint = " (a compact T5 goes in the compact_t5 slot)" if found == comfy.sd.TEModel.T5_BASE else ""
        raise ValueError(f"{path}: expected a {slot.upper().replace('_', '-')} text encoder, found {what}{hint}")
    return sd
