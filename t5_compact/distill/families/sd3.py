"""Stable Diffusion 3 / 3.5: plain latents, T5 after the padded CLIP-L/G embeddings, pooled projections, CFG."""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from ..embeds import TextEmbeds
from .base import FamilyAdapter


class SD3Adapter(FamilyAdapter):
    """Stable Diffusion 3 / 3.5: T5 embedding after the padded CLIP-L/G embeddings; pooled projections used."""

    family = "sd3"
    pipeline_prefixes = ("StableDiffusion3",)
    t5_slot, t5_tokenizer = "text_encoder_3", "tokenizer_3"
    clip_slots = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))
    clip_class = "CLIPTextModelWithProjection"
    clip_hidden = True
    uses_cfg = True
    max_shift_default = 1.16

    def latent_shape(self, batch_size: int, height: int, width: int) -> tuple[int, ...]:
        f = self.vae_scale_factor
        return (batch_size, self.transformer.config.in_channels, int(height) // f, int(width) // f)

    def image_seq_len(self, height: int, width: int) -> int:
        p = self.transformer.config.patch_size
        _, _, h, w = self.latent_shape(1, height, width)
        return (h // p) * (w // p)

    def prepare_latents(self, batch_size: int, height: int, width: int, generator=None, device=None) -> torch.Tensor:
        shape = self.latent_shape(batch_size, height, width)
        return randn_tensor(shape, generator=generator, device=device or self.device, dtype=torch.float32)

    def _sigmas_and_mu(self, num_steps: int, height: int, width: int):
        mu = self._mu(height, width) if self.scheduler_config.get("use_dynamic_shifting", None) else None
        return None, mu

    def joint_embeds(self, cond: TextEmbeds) -> torch.Tensor:
        """`cat([pad(clip, W), t5], dim=-2)` as `StableDiffusion3Pipeline.encode_prompt` builds it."""
        t5 = cond.t5
        clip = cond.clip
        if clip is None:
            clip = torch.zeros(t5.shape[0], 77, 2048, device=t5.device, dtype=t5.dtype)
        clip = nn.functional.pad(clip.to(t5.dtype), (0, t5.shape[-1] - clip.shape[-1]))
        return torch.cat([clip, t5], dim=-2)

    def velocity(self, latents, t, cond: TextEmbeds, guidance=None, *, height: int, width: int) -> torch.Tensor:
        """Conditional velocity; classifier-free guidance is combined by the caller (see `follow_teacher`)."""
        batch = latents.shape[0]
        dtype = self.dtype
        pooled = cond.pooled if cond.pooled is not None else self._zero_pooled(batch, latents.device)
        timestep = t.expand(batch) if t.dim() == 0 else t
        out = self.transformer(
            hidden_states=latents.to(dtype),
            timestep=timestep,
            encoder_hidden_states=self.joint_embeds(cond).to(dtype),
            pooled_projections=pooled.to(dtype),
            return_dict=False,
        )[0]
        return out.float()
