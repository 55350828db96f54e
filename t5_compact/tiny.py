"""Tiny random FLUX / SD3 pipelines and tokenizers, built offline from configs (tests, CPU demos, `tiny-cpu.yaml`).

Shapes follow diffusers' own pipeline tests (`get_dummy_components`); tokenizers are built in code so nothing is
downloaded. The T5 tokenizer is a small sentencepiece-style Unigram model that tokenizes any text (unknown pieces
map to `<unk>`), padded and terminated with `</s>` exactly like T5's.

A testbed where the text matters. With default random weights the tiny transformers barely read the text: attention
is nearly uniform, so image tokens see the average of the text tokens, and the AdaLN gates are small. A "null
student" that outputs the teacher's mean embedding for every prompt then scores almost as well as the teacher, and a
falling held-out L_vision only shows that the student learned the average embedding. Three weight changes, made
once after the random init (`TEXT_PATHWAY`), fix that without changing any shape or class:

- teacher (`tiny_teacher_t5`): token embeddings centred over the vocabulary (no shared offset that a constant
  embedding gets for free) and the final RMSNorm gain x3 (larger-variance, more prompt-specific embeddings);
- transformer (`strengthen_text_pathway`): query / key gains x8 (FLUX: the q/k RMSNorm weights, which would undo a
  rescaled projection; SD3: the q/k projections) so attention picks tokens by content instead of averaging them, and
  the AdaLN modulation layers x6 so attention (and with it the text) moves the velocity.

Measured on the test prompts (tests/test_train.py: 16 px, 3 steps, 12 tokens): the null student's held-out L_vision
is 0.74-1.43x the untrained student's per category (FLUX and SD3), so it closes under half of the gap to the teacher
(at 0); with diffusers' plain random weights it closed 64% (FLUX) and 81% (SD3) of it in the text category.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torch import nn
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from .configuration_t5_compact import T5CompactConfig
from .modeling_t5_compact import T5CompactEncoder

# Text-pathway gains of the testbed (see the module docstring); all 1.0 gives diffusers' plain random init.
TEXT_PATHWAY = {"teacher_norm_gain": 3.0, "attention_qk_gain": 8.0, "modulation_gain": 6.0}
TINY_WIDTH = 32  # joint_attention_dim of the tiny transformers = the teacher's / student's output width
TINY_T5_VOCAB = 256
_WORDS = (
    "a an the of and with on in at to is are sign that says cat dog red blue green yellow black white photo "
    "panda holding two three four left right next above below car house tree man woman book cup text word"
).split()


def tiny_t5_tokenizer(model_max_length: int = 512) -> T5TokenizerFast:
    """A T5-style tokenizer (`<pad>`=0, `</s>`=1, `<unk>`=2) with a ~200-piece vocabulary."""
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -5.0) for c in chars] + [("▁" + c, -4.0) for c in chars] + [("▁" + w, -1.0) for w in _WORDS]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=model_max_length,
    )


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer (no merges: one token per character) with 77 positions."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_clip_config(projection_dim: int = TINY_WIDTH) -> CLIPTextConfig:
    """Config of a 2-layer, 32-wide CLIP text model matching `tiny_clip_tokenizer`."""
    return CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=514,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=projection_dim,
    )


def tiny_teacher_t5(width: int = TINY_WIDTH, **overrides) -> T5EncoderModel:
    """A random stand-in for the T5-XXL teacher: a 2-layer T5 encoder whose output width is `width`, with centred
    token embeddings and a larger final-norm gain (`TEXT_PATHWAY`, module docstring). `overrides`: other T5Config
    fields (`num_layers`, `d_ff`, ...)."""
    fields = dict(d_kv=8, d_ff=64, num_heads=4, num_layers=2) | overrides
    config = T5Config(
        vocab_size=TINY_T5_VOCAB,
        d_model=width,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        **fields,
    )
    model = T5EncoderModel(config)
    with torch.no_grad():
        model.shared.weight.sub_(model.shared.weight.mean(dim=0, keepdim=True))
        model.encoder.final_layer_norm.weight.mul_(TEXT_PATHWAY["teacher_norm_gain"])
    return model.eval()


def strengthen_text_pathway(transformer: torch.nn.Module) -> torch.nn.Module:
    """Scale a random tiny transformer's query / key gains and AdaLN modulation layers (`TEXT_PATHWAY`) so that its
    velocity depends on the prompt, not only on the mean text embedding. In place; returns `transformer`."""
    qk, modulation = TEXT_PATHWAY["attention_qk_gain"], TEXT_PATHWAY["modulation_gain"]
    with torch.no_grad():
        for name, module in transformer.named_modules():
            last = name.rsplit(".", 1)[-1]
            if last in ("norm1", "norm1_context", "norm") and isinstance(getattr(module, "linear", None), nn.Linear):
                module.linear.weight.mul_(modulation)
                module.linear.bias.mul_(modulation)
            if last == "attn":
                if getattr(module, "norm_q", None) is not None:  # FLUX: q/k RMSNorm would undo a rescaled projection
                    for norm in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
                        if getattr(module, norm, None) is not None:
                            getattr(module, norm).weight.mul_(qk)
                else:
                    for proj in ("to_q", "to_k", "add_q_proj", "add_k_proj"):
                        if getattr(module, proj, None) is not None:
                            getattr(module, proj).weight.mul_(qk)
    return transformer


def tiny_compact_config(out_dim: int = TINY_WIDTH, **overrides) -> T5CompactConfig:
    """Config of a tiny student: a 2-layer, 16-wide T5 encoder projected to `out_dim`."""
    fields = dict(
        vocab_size=TINY_T5_VOCAB,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_heads=2,
        num_layers=2,
        projection_hidden_dim=64,
        projection_out_dim=out_dim,
    )
    return T5CompactConfig(**{**fields, **overrides})


def tiny_compact_encoder(out_dim: int = TINY_WIDTH, seed: int = 0, **overrides) -> T5CompactEncoder:
    """A randomly initialised tiny student (see `tiny_compact_config`), in eval mode."""
    torch.manual_seed(seed)
    return T5CompactEncoder(tiny_compact_config(out_dim, **overrides)).eval()


def tiny_vae(latent_channels: int):
    """A one-block `AutoencoderKL` (scale factor 1), as diffusers' FLUX / SD3 / Chroma tests build it."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def tiny_flux_components(guidance_embeds: bool = True, seed: int = 0) -> dict[str, object]:
    """Components of a random FLUX pipeline; `guidance_embeds=True` is dev-style, False schnell-style."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_WIDTH,
        pooled_projection_dim=TINY_WIDTH,
        axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance_embeds,
    )
    strengthen_text_pathway(transformer)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(tiny_clip_config())
    torch.manual_seed(seed)
    text_encoder_2 = tiny_teacher_t5()
    torch.manual_seed(seed)
    vae = tiny_vae(latent_channels=1)
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2,
        "tokenizer": tiny_clip_tokenizer(),
        "tokenizer_2": tiny_t5_tokenizer(),
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_sd3_components(seed: int = 0) -> dict[str, object]:
    """Components of a random Stable Diffusion 3 pipeline (CLIP-L, CLIP-G and a T5 teacher)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=TINY_WIDTH,
        pooled_projection_dim=64,
        out_channels=4,
    )
    strengthen_text_pathway(transformer)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(tiny_clip_config())
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_config())
    torch.manual_seed(seed)
    text_encoder_3 = tiny_teacher_t5()
    torch.manual_seed(seed)
    vae = tiny_vae(latent_channels=4)
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "text_encoder_3": text_encoder_3,
        "tokenizer": tiny_clip_tokenizer(),
        "tokenizer_2": tiny_clip_tokenizer(),
        "tokenizer_3": tiny_t5_tokenizer(),
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "image_encoder": None,
        "feature_extractor": None,
    }


def tiny_pipeline(family: str = "flux", seed: int = 0, **kwargs):
    """A tiny random `FluxPipeline` (`family="flux"`) or `StableDiffusion3Pipeline` (`family="sd3"`)."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    if family == "flux":
        return FluxPipeline(**tiny_flux_components(seed=seed, **kwargs))
    if family == "sd3":
        return StableDiffusion3Pipeline(**tiny_sd3_components(seed=seed, **kwargs))
    raise ValueError(f"unknown pipeline family {family!r}; expected 'flux' or 'sd3'")
