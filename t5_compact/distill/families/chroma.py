"""Chroma: FLUX-derived latents and shift, T5 only (masked in the encoder and, plus one pad token, in the
transformer), no guidance embedding or pooled vector, classifier-free guidance with a negative prompt."""

from __future__ import annotations

import torch
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

from ..embeds import TextEmbeds
from .flux import FluxAdapter


class ChromaAdapter(FluxAdapter):
    """`ChromaPipeline`: `FluxAdapter`'s latents and timesteps, Chroma's transformer call and masks."""

    family = "chroma"
    pipeline_prefixes = ("Chroma",)
    t5_slot, t5_tokenizer = "text_encoder", "tokenizer"
    clip_slots = ()
    uses_cfg = True
    text_mask = True
    encoder_mask = True

    @property
    def uses_guidance_embedding(self) -> bool:
        return False

    @staticmethod
    def transformer_mask(token_mask: torch.Tensor, image_seq_len: int) -> torch.Tensor:
        """`ChromaPipeline`'s attention mask: the prompt's tokens plus the first pad token, then every image token."""
        batch, length = token_mask.shape
        seq_lengths = token_mask.sum(dim=1, keepdim=True)
        text = torch.arange(length, device=token_mask.device).unsqueeze(0) <= seq_lengths
        image = torch.ones(batch, image_seq_len, device=token_mask.device, dtype=torch.bool)
        return torch.cat([text, image], dim=1)

    def velocity(self, latents, t, cond: TextEmbeds, guidance=None, *, height: int, width: int) -> torch.Tensor:
        """Conditional velocity; classifier-free guidance is combined by the caller (see `follow_teacher`)."""
        batch, device, dtype = latents.shape[0], latents.device, self.dtype
        h, w = self._latent_hw(height, width)
        img_ids = self._constant(
            ("img_ids", h, w, device, dtype),
            lambda: FluxPipeline._prepare_latent_image_ids(batch, h // 2, w // 2, device, dtype),
        )
        seq = cond.t5.shape[1]
        txt_ids = self._constant(
            ("txt_ids", seq, device, dtype), lambda: torch.zeros(seq, 3, device=device, dtype=dtype)
        )
        mask = None
        if cond.mask is not None:
            mask = self.transformer_mask(cond.mask.to(device).long(), latents.shape[1])
        timestep = t.expand(batch).to(latents.dtype) if t.dim() == 0 else t.to(latents.dtype)
        out = self.transformer(
            hidden_states=latents.to(dtype),
            timestep=timestep / 1000,
            encoder_hidden_states=cond.t5.to(dtype),
            txt_ids=txt_ids,
            img_ids=img_ids,
            attention_mask=mask,
            return_dict=False,
        )[0]
        return out.float()
