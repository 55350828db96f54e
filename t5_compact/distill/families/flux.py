"""FLUX.1: packed 2x2 latents with position ids, guidance embedding (dev), CLIP-L pooled vector (zeroable)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.utils.torch_utils import randn_tensor

from ..embeds import TextEmbeds
from .base import FamilyAdapter


class FluxAdapter(FamilyAdapter):
    """FLUX.1 (dev-style with guidance embedding, or schnell-style without)."""

    family = "flux"
    pipeline_prefixes = ("Flux",)
    t5_slot, t5_tokenizer = "text_encoder_2", "tokenizer_2"
    clip_slots = (("text_encoder", "tokenizer"),)
    max_shift_default = 1.15

    @property
    def uses_guidance_embedding(self) -> bool:
        return bool(self.transformer.config.guidance_embeds)

    def _latent_hw(self, height: int, width: int) -> tuple[int, int]:
        f = self.vae_scale_factor
        return 2 * (int(height) // (f * 2)), 2 * (int(width) // (f * 2))

    def latent_shape(self, batch_size: int, height: int, width: int) -> tuple[int, ...]:
        h, w = self._latent_hw(height, width)
        return (batch_size, (h // 2) * (w // 2), self.transformer.config.in_channels)

    def unpack_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return FluxPipeline._unpack_latents(latents, height, width, self.vae_scale_factor)

    def image_seq_len(self, height: int, width: int) -> int:
        h, w = self._latent_hw(height, width)
        return (h // 2) * (w // 2)

    def prepare_latents(self, batch_size: int, height: int, width: int, generator=None, device=None) -> torch.Tensor:
        h, w = self._latent_hw(height, width)
        channels = self.transformer.config.in_channels // 4
        device = device or self.device
        noise = randn_tensor((batch_size, channels, h, w), generator=generator, device=device, dtype=torch.float32)
        return FluxPipeline._pack_latents(noise, batch_size, channels, h, w)

    def _sigmas_and_mu(self, num_steps: int, height: int, width: int):
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        if self.scheduler_config.get("use_flow_sigmas", False):
            sigmas = None
        return sigmas, self._mu(height, width)

    def velocity(self, latents, t, cond: TextEmbeds, guidance=None, *, height: int, width: int) -> torch.Tensor:
        batch, device = latents.shape[0], latents.device
        h, w = self._latent_hw(height, width)
        dtype = self.dtype
        img_ids = self._constant(
            ("img_ids", h, w, device, dtype),
            lambda: FluxPipeline._prepare_latent_image_ids(batch, h // 2, w // 2, device, dtype),
        )
        seq = cond.t5.shape[1]
        make_txt = lambda: torch.zeros(seq, 3, device=device, dtype=dtype)  # noqa: E731
        txt_ids = self._constant(("txt_ids", seq, device, dtype), make_txt)
        if self.uses_guidance_embedding:
            if guidance is None:
                raise ValueError("this FLUX transformer has a guidance embedding: pass a guidance value")
            guidance = torch.as_tensor(guidance, dtype=torch.float32, device=latents.device).reshape(-1)
            guidance = guidance.expand(batch) if guidance.numel() == 1 else guidance
        else:
            guidance = None
        pooled = cond.pooled if cond.pooled is not None else self._zero_pooled(batch, device)
        timestep = t.expand(batch).to(latents.dtype) if t.dim() == 0 else t.to(latents.dtype)
        out = self.transformer(
            hidden_states=latents.to(dtype),
            timestep=timestep / 1000,
            guidance=guidance,
            pooled_projections=pooled.to(dtype),
            encoder_hidden_states=cond.t5.to(dtype),
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return out.float()
