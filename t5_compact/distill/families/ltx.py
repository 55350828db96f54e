"""LTX-Video: packed video latents `[B, F*H*W, C]`, its own sequence-length shift, raw timesteps, rope
interpolation from the VAE's compression, the T5 token mask in the transformer (not the encoder), CFG."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.pipelines.ltx.pipeline_ltx import LTXPipeline
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from ..embeds import TextEmbeds
from .base import FamilyAdapter


class LTXAdapter(FamilyAdapter):
    """`LTXPipeline` (text-to-video). `height`/`width` are pixels; `num_frames` and `frame_rate` are fixed per
    adapter (the training config's `num_frames`); `vae_scale_factor` is the VAE's spatial compression."""

    family = "ltx"
    pipeline_prefixes = ("LTX",)
    text_width_key = "caption_channels"
    uses_cfg = True
    text_mask = True

    def __init__(
        self,
        transformer: nn.Module,
        scheduler,
        vae_scale_factor: int = 32,
        temporal_compression: int = 8,
        num_frames: int = 9,
        frame_rate: int = 25,
    ):
        super().__init__(transformer, scheduler, vae_scale_factor)
        self.temporal_compression = int(temporal_compression)
        self.num_frames = int(num_frames)
        self.frame_rate = frame_rate

    @classmethod
    def vae_options(cls, vae_config: dict | None) -> dict:
        """Spatial / temporal compression as `AutoencoderKLLTXVideo` computes them from its config."""
        if not vae_config:
            return {"vae_scale_factor": 32, "temporal_compression": 8}
        scaling = sum(bool(s) for s in vae_config.get("spatio_temporal_scaling", (True, True, True, False)))
        spatial = vae_config.get("spatial_compression_ratio") or vae_config.get("patch_size", 4) * 2**scaling
        temporal = vae_config.get("temporal_compression_ratio") or vae_config.get("patch_size_t", 1) * 2**scaling
        return {"vae_scale_factor": spatial, "temporal_compression": temporal}

    @classmethod
    def pipeline_options(cls, pipe) -> dict:
        return {
            "vae_scale_factor": pipe.vae_spatial_compression_ratio,
            "temporal_compression": pipe.vae_temporal_compression_ratio,
        }

    @classmethod
    def config_options(cls, config) -> dict:
        return {"num_frames": config.num_frames}

    @property
    def uses_guidance_embedding(self) -> bool:
        return False

    def unpack_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """`[B, C, F, H, W]` video latents."""
        frames, h, w = self._latent_fhw(height, width)
        cfg = self.transformer.config
        return LTXPipeline._unpack_latents(latents, frames, h, w, cfg.patch_size, cfg.patch_size_t)

    @torch.no_grad()
    def decode(self, vae, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The first frame of each video `[B, 3, H, W]`, decoded as `LTXPipeline` does with `decode_timestep=0`."""
        video = self.unpack_latents(latents, height, width)
        video = LTXPipeline._denormalize_latents(video, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        param = next(vae.parameters())
        video = video.to(param.device, param.dtype)
        timestep = None
        if vae.config.timestep_conditioning:
            timestep = torch.zeros(video.shape[0], device=param.device, dtype=param.dtype)
        return vae.decode(video, timestep, return_dict=False)[0][:, :, 0]

    def _latent_fhw(self, height: int, width: int) -> tuple[int, int, int]:
        f = self.vae_scale_factor
        return (self.num_frames - 1) // self.temporal_compression + 1, int(height) // f, int(width) // f

    def latent_shape(self, batch_size: int, height: int, width: int) -> tuple[int, ...]:
        frames, h, w = self._latent_fhw(height, width)
        p, pt = self.transformer.config.patch_size, self.transformer.config.patch_size_t
        channels = self.transformer.config.in_channels * p * p * pt
        return (batch_size, (frames // pt) * (h // p) * (w // p), channels)

    def image_seq_len(self, height: int, width: int) -> int:
        frames, h, w = self._latent_fhw(height, width)
        return frames * h * w  # as `LTXPipeline`: before patching

    def prepare_latents(self, batch_size: int, height: int, width: int, generator=None, device=None) -> torch.Tensor:
        frames, h, w = self._latent_fhw(height, width)
        shape = (batch_size, self.transformer.config.in_channels, frames, h, w)
        noise = randn_tensor(shape, generator=generator, device=device or self.device, dtype=torch.float32)
        cfg = self.transformer.config
        return LTXPipeline._pack_latents(noise, cfg.patch_size, cfg.patch_size_t)

    def _sigmas_and_mu(self, num_steps: int, height: int, width: int):
        return np.linspace(1.0, 1 / num_steps, num_steps), self._mu(height, width)

    def velocity(self, latents, t, cond: TextEmbeds, guidance=None, *, height: int, width: int) -> torch.Tensor:
        """Conditional velocity; classifier-free guidance is combined by the caller (see `follow_teacher`)."""
        batch, dtype = latents.shape[0], self.dtype
        frames, h, w = self._latent_fhw(height, width)
        timestep = t.expand(batch) if t.dim() == 0 else t
        mask = None if cond.mask is None else cond.mask.to(latents.device).bool()
        spatial = self.vae_scale_factor
        out = self.transformer(
            hidden_states=latents.to(dtype),
            encoder_hidden_states=cond.t5.to(dtype),
            timestep=timestep,
            encoder_attention_mask=mask,
            num_frames=frames,
            height=h,
            width=w,
            rope_interpolation_scale=(self.temporal_compression / self.frame_rate, spatial, spatial),
            return_dict=False,
        )[0]
        return out.float()
