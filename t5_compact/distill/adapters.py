"""Family adapters: a frozen FLUX / SD3 transformer + its scheduler, driven exactly like the diffusers pipelines.

Each adapter reproduces the pipeline's latent preparation (FLUX packing and position ids; SD3 plain latents), its
flow-matching Euler timesteps with the resolution-dependent shift (`calculate_shift` + `retrieve_timesteps`), its
transformer call and its scheduler step. Latents stay float32; the transformer runs in its own dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline, calculate_shift, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from .embeds import TextEmbeds


class FamilyAdapter:
    """Common interface; see `FluxAdapter` and `SD3Adapter`."""

    family: str
    max_shift_default: float = 1.15

    def __init__(self, transformer: nn.Module, scheduler, vae_scale_factor: int = 8):
        self.transformer = transformer
        self.scheduler_config = scheduler.config
        self.scheduler_class = type(scheduler)
        self.vae_scale_factor = int(vae_scale_factor)
        self._constants: dict[tuple, torch.Tensor] = {}

    def _constant(self, key: tuple, make) -> torch.Tensor:
        """A no-grad input tensor that depends only on `key` (shapes, device, dtype), built once and reused by every
        transformer call with that key (position ids, zero pooled vectors). The transformer never writes to them."""
        value = self._constants.get(key)
        if value is None:
            if len(self._constants) > 64:
                self._constants.clear()
            value = self._constants[key] = make()
        return value

    @property
    def text_width(self) -> int:
        """Width of the T5 embeddings the transformer takes (`joint_attention_dim`)."""
        return self.transformer.config.joint_attention_dim

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def uses_guidance_embedding(self) -> bool:
        """True when the transformer takes a distilled guidance value (FLUX-dev)."""
        return False

    def new_scheduler(self):
        """A fresh scheduler (schedulers carry a step index, so each trajectory gets its own)."""
        return self.scheduler_class.from_config(self.scheduler_config)

    def latent_shape(self, batch_size: int, height: int, width: int) -> tuple[int, ...]:
        raise NotImplementedError

    def prepare_latents(self, batch_size: int, height: int, width: int, generator=None, device=None) -> torch.Tensor:
        """Pure-noise float32 latents drawn like the pipeline's `prepare_latents` (same generator, same values)."""
        raise NotImplementedError

    def image_seq_len(self, height: int, width: int) -> int:
        raise NotImplementedError

    def _sigmas_and_mu(self, num_steps: int, height: int, width: int) -> tuple[np.ndarray | None, float | None]:
        raise NotImplementedError

    def set_timesteps(self, scheduler, num_steps: int, height: int, width: int, device=None) -> torch.Tensor:
        """Set the pipeline's timesteps (with its shift) on `scheduler`; returns them."""
        sigmas, mu = self._sigmas_and_mu(num_steps, height, width)
        kwargs = {} if mu is None else {"mu": mu}
        timesteps, _ = retrieve_timesteps(scheduler, num_steps, device, sigmas=sigmas, **kwargs)
        scheduler.set_begin_index(0)
        return timesteps

    def _mu(self, height: int, width: int) -> float:
        cfg = self.scheduler_config
        return calculate_shift(
            self.image_seq_len(height, width),
            cfg.get("base_image_seq_len", 256),
            cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5),
            cfg.get("max_shift", self.max_shift_default),
        )

    def velocity(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        cond: TextEmbeds,
        guidance: torch.Tensor | float | None = None,
        *,
        height: int,
        width: int,
    ) -> torch.Tensor:
        """The transformer's conditional velocity (float32) at `latents` and scheduler timestep `t`.

        `guidance`: FLUX-dev's distilled guidance (scalar or `[B]`); ignored by schnell-style FLUX and by SD3,
        whose classifier-free guidance `follow_teacher` combines from two calls."""
        raise NotImplementedError

    def _zero_pooled(self, batch: int, device: torch.device) -> torch.Tensor:
        """Float32 zeros `[batch, pooled_projection_dim]`: the pooled vector when the CLIP part is dropped."""
        dim = self.transformer.config.pooled_projection_dim
        return self._constant(("pooled", batch, dim, device), lambda: torch.zeros(batch, dim, device=device))

    @staticmethod
    def step(scheduler, velocity: torch.Tensor, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """One flow-matching Euler step `x_{t-1} = scheduler.step(v, t, x_t)` (float32)."""
        return scheduler.step(velocity.float(), t, latents.float(), return_dict=False)[0]


class FluxAdapter(FamilyAdapter):
    """FLUX.1 (dev-style with guidance embedding, or schnell-style without)."""

    family = "flux"
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


class SD3Adapter(FamilyAdapter):
    """Stable Diffusion 3 / 3.5: T5 embedding after the padded CLIP-L/G embeddings; pooled projections used."""

    family = "sd3"
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


def make_adapter(family: str, transformer: nn.Module, scheduler, vae_scale_factor: int = 8) -> FamilyAdapter:
    """An adapter for `family` ("flux" or "sd3") around a frozen transformer and its scheduler."""
    classes = {"flux": FluxAdapter, "sd3": SD3Adapter}
    if family not in classes:
        raise ValueError(f"unknown family {family!r}; expected 'flux' or 'sd3'")
    transformer.requires_grad_(False)
    return classes[family](transformer, scheduler, vae_scale_factor)


def adapter_from_pipeline(pipe) -> FamilyAdapter:
    """The adapter for a loaded `FluxPipeline` / `StableDiffusion3Pipeline` (transformer, scheduler, VAE factor)."""
    from ..pipelines import detect_family

    return make_adapter(detect_family(pipe), pipe.transformer, pipe.scheduler, pipe.vae_scale_factor)


def vae_scale_factor_from_config(vae_config: dict | None) -> int:
    """`2 ** (len(block_out_channels) - 1)` as the pipelines compute it (8 without a VAE config)."""
    if not vae_config:
        return 8
    return 2 ** (len(vae_config["block_out_channels"]) - 1)
