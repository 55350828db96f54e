"""Tiny random pipelines of every tested T5 family, built offline the way diffusers' own tests build them.

Each builder follows `tests/pipelines/<name>/test_*.py::get_dummy_components` in diffusers, with the hub-downloaded
tiny T5 / CLIP / Llama replaced by models and tokenizers built from configs (`t5_compact.tiny`), so nothing is
downloaded. Every T5 slot is `TINY_WIDTH` (32) wide. `TINY_CALLS` holds the call arguments of a two-step run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .tiny import TINY_WIDTH, tiny_clip_config, tiny_clip_tokenizer, tiny_t5_tokenizer, tiny_teacher_t5, tiny_vae


def _t5_parts(seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    return {"text_encoder": tiny_teacher_t5(), "tokenizer": tiny_t5_tokenizer()}


def tiny_flux_kontext(seed: int = 0):
    """`FluxKontextPipeline` with the tiny FLUX components (text-to-image when no image is given)."""
    from diffusers import FluxKontextPipeline

    from .tiny import tiny_flux_components

    return FluxKontextPipeline(**tiny_flux_components(seed=seed))


def tiny_chroma(seed: int = 0):
    """`ChromaPipeline` (FLUX-derived, T5 only, masked T5) as in diffusers' `test_pipeline_chroma.py`."""
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_WIDTH,
        axes_dims_rope=[4, 4, 8],
        approximator_hidden_dim=32,
        approximator_layers=1,
        approximator_num_channels=16,
    )
    torch.manual_seed(seed)
    vae = tiny_vae(latent_channels=1)
    return ChromaPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        transformer=transformer.eval(),
        vae=vae.eval(),
        image_encoder=None,
        feature_extractor=None,
        **_t5_parts(seed),
    )


def tiny_pixart_sigma(seed: int = 0):
    """`PixArtSigmaPipeline` as in diffusers' `test_pixart.py` (sigma), with a 1-block VAE."""
    from diffusers import DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=TINY_WIDTH,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    torch.manual_seed(seed)
    vae = tiny_vae(latent_channels=4)
    return PixArtSigmaPipeline(
        transformer=transformer.eval(), vae=vae.eval(), scheduler=DDIMScheduler(), **_t5_parts(seed)
    )


def tiny_ltx(seed: int = 0):
    """`LTXPipeline` (video, masked T5, CFG) as in diffusers' `test_ltx.py`."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=TINY_WIDTH,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        spatio_temporal_scaling=(True, True, False, False),
        layers_per_block=(1, 1, 1, 1, 1),
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return LTXPipeline(
        transformer=transformer.eval(),
        vae=vae.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        **_t5_parts(seed),
    )


def tiny_cogvideox(seed: int = 0):
    """`CogVideoXPipeline` as in diffusers' `test_cogvideox.py`."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXPipeline, CogVideoXTransformer3DModel, DDIMScheduler

    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=TINY_WIDTH,
        num_layers=1,
        sample_width=2,
        sample_height=2,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    return CogVideoXPipeline(
        transformer=transformer.eval(), vae=vae.eval(), scheduler=DDIMScheduler(), **_t5_parts(seed)
    )


def tiny_hidream(seed: int = 0):
    """`HiDreamImagePipeline` (CLIP-L/G + T5 in `text_encoder_3` + Llama) as in diffusers' `test_pipeline_hidream.py`;
    the Llama is a 2-layer `LlamaForCausalLM` from a config and shares the tiny T5 tokenizer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HiDreamImagePipeline, HiDreamImageTransformer2DModel
    from transformers import CLIPTextModelWithProjection, LlamaConfig, LlamaForCausalLM

    from .tiny import TINY_T5_VOCAB

    torch.manual_seed(seed)
    transformer = HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=[TINY_WIDTH, 16],
        text_emb_dim=64,
        num_routed_experts=4,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(32, 32),
        llama_layers=(0, 1),
    )
    torch.manual_seed(seed)
    vae = tiny_vae(latent_channels=4)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(tiny_clip_config())
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_config())
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=TINY_T5_VOCAB,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
    )
    torch.manual_seed(seed)
    return HiDreamImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=tiny_teacher_t5(),
        tokenizer_3=tiny_t5_tokenizer(),
        text_encoder_4=llama.eval(),
        tokenizer_4=tiny_t5_tokenizer(),
        transformer=transformer.eval(),
    )


def _tiny_flux(seed: int = 0):
    from .tiny import tiny_pipeline

    return tiny_pipeline("flux", seed=seed)


def _tiny_sd3(seed: int = 0):
    from .tiny import tiny_pipeline

    return tiny_pipeline("sd3", seed=seed)


# Pipeline class name -> builder. The drop-in tests run every entry; the README table is checked against it.
TINY_PIPELINES: dict[str, Callable[..., object]] = {
    "FluxPipeline": _tiny_flux,
    "FluxKontextPipeline": tiny_flux_kontext,
    "StableDiffusion3Pipeline": _tiny_sd3,
    "ChromaPipeline": tiny_chroma,
    "PixArtSigmaPipeline": tiny_pixart_sigma,
    "LTXPipeline": tiny_ltx,
    "CogVideoXPipeline": tiny_cogvideox,
    "HiDreamImagePipeline": tiny_hidream,
}

_IMAGE = {"height": 32, "width": 32, "max_sequence_length": 16, "output_type": "np"}
# Call arguments of a two-step run of each tiny pipeline (`prompt=` and `generator=` added by the caller).
TINY_CALLS: dict[str, dict] = {
    "FluxPipeline": _IMAGE,
    "FluxKontextPipeline": _IMAGE | {"max_area": 32 * 32, "_auto_resize": False},
    "StableDiffusion3Pipeline": _IMAGE,
    "ChromaPipeline": _IMAGE | {"negative_prompt": "bad", "guidance_scale": 5.0},
    "PixArtSigmaPipeline": _IMAGE | {"use_resolution_binning": False},
    # latents: the tiny LTX VAE decodes 9 frames in ~9 s on one CPU thread, far longer than the two steps
    "LTXPipeline": {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 16, "output_type": "latent"},
    "CogVideoXPipeline": {"height": 16, "width": 16, "num_frames": 8, "max_sequence_length": 16, "output_type": "np"},
    "HiDreamImagePipeline": {"height": 32, "width": 32, "max_sequence_length": 16, "output_type": "np"},
}


def tiny_any_pipeline(name: str, seed: int = 0):
    """A tiny random pipeline of class `name` (a key of `TINY_PIPELINES`)."""
    if name not in TINY_PIPELINES:
        raise ValueError(f"no tiny builder for {name}; known: {', '.join(TINY_PIPELINES)}")
    return TINY_PIPELINES[name](seed=seed)
