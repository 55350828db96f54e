"""The family interface: a frozen transformer + its scheduler, driven exactly like its diffusers pipeline.

Each family (one file in this package) reproduces its pipeline's latent preparation, its flow-matching Euler
timesteps with the pipeline's shift (`calculate_shift` + `retrieve_timesteps`), its transformer call and its scheduler
step. Latents stay float32; the transformer runs in its own dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from torch import nn

from ..embeds import TextEmbeds, t5_token_mask


def vae_scale_factor_from_config(vae_config: dict | None) -> int:
    """`2 ** (len(block_out_channels) - 1)` as the pipelines compute it (8 without a VAE config)."""
    if not vae_config:
        return 8
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


class FamilyAdapter:
    """Common interface of a family; subclasses set the class attributes below and implement the latent maths.

    Class attributes (what the rest of the code asks instead of comparing family names):
    `family` (registry key), `pipeline_prefixes` (diffusers class-name prefixes), `t5_slot` / `t5_tokenizer`
    (component names), `clip_slots` ((encoder, tokenizer) pairs; empty: no CLIP), `clip_class`, `clip_hidden`
    (CLIP hidden states are part of the conditioning, so CLIP is always needed: SD3), `uses_cfg` (classifier-free
    guidance with the teacher's encoding of "" as negative), `text_mask` (the transformer takes the T5 token mask),
    `encoder_mask` (the pipeline also passes it to the T5 encoder).
    """

    family: str
    pipeline_prefixes: tuple[str, ...] = ()
    t5_slot: str = "text_encoder"
    t5_tokenizer: str = "tokenizer"
    clip_slots: tuple[tuple[str, str], ...] = ()
    clip_class: str = "CLIPTextModel"
    clip_hidden: bool = False
    uses_cfg: bool = False
    text_mask: bool = False
    encoder_mask: bool = False
    text_width_key: str = "joint_attention_dim"
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

    @classmethod
    def needs_clip(cls, zero_pooled: bool) -> bool:
        """Whether CLIP must run: its hidden states are conditioning, or its pooled vector is used (not zeroed)."""
        return cls.clip_hidden or (bool(cls.clip_slots) and not zero_pooled)

    @classmethod
    def vae_options(cls, vae_config: dict | None) -> dict:
        """Constructor options from the VAE's config (`vae_scale_factor` as the pipelines compute it)."""
        return {"vae_scale_factor": vae_scale_factor_from_config(vae_config)}

    @classmethod
    def pipeline_options(cls, pipe) -> dict:
        """Constructor options from a loaded pipeline."""
        return {"vae_scale_factor": pipe.vae_scale_factor}

    @property
    def text_width(self) -> int:
        """Width of the T5 embeddings the transformer takes (`text_width_key` of its config)."""
        return getattr(self.transformer.config, self.text_width_key)

    def encode_t5(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """`model(ids)[0]` as the pipeline calls its T5 (with the token mask when `encoder_mask`)."""
        return model(ids, attention_mask=t5_token_mask(ids) if self.encoder_mask else None)[0]

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the transformer computes in: its parameters' dtype, except under diffusers' layerwise casting
        (`transformer_storage_dtype: float8_e4m3fn`), where 8-bit weights are upcast per layer to the dtype of the
        modules it keeps (norms, embeddings)."""
        params = self.transformer.parameters()
        first = next(params).dtype
        if first.itemsize > 1 or not first.is_floating_point:
            return first
        return next((p.dtype for p in params if p.dtype.itemsize > 1), torch.bfloat16)

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

    @classmethod
    def config_options(cls, config) -> dict:
        """Constructor options from a training config (LTX: `num_frames`); none by default."""
        return {}

    def unpack_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Final latents in the VAE's layout (identity for plain latents)."""
        return latents

    @torch.no_grad()
    def decode(self, vae, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Images `[B, 3, H, W]` in [-1, 1] from final latents, as the pipeline decodes them (unscale, shift, VAE)."""
        latents = self.unpack_latents(latents, height, width)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latents = latents / vae.config.scaling_factor + shift
        param = next(vae.parameters())
        return vae.decode(latents.to(param.device, param.dtype), return_dict=False)[0]

    @staticmethod
    def step(scheduler, velocity: torch.Tensor, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """One flow-matching Euler step `x_{t-1} = scheduler.step(v, t, x_t)` (float32)."""
        return scheduler.step(velocity.float(), t, latents.float(), return_dict=False)[0]
