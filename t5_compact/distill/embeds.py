"""Text conditioning shared by teacher and student: token ids, CLIP parts, and the family's embedding layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

T5_PAD_ID = 0  # every T5 tokenizer pads with id 0


def t5_token_mask(ids: torch.Tensor) -> torch.Tensor:
    """The tokenizer's attention mask of padded T5 ids (`1` for tokens and `</s>`, `0` for padding)."""
    return (ids != T5_PAD_ID).long()


@dataclass
class TextEmbeds:
    """What a batch of prompts is encoded to, family-agnostic (rows = prompts).

    `t5`: `[B, L, W]` the T5 part (teacher T5-XXL or the student). `clip`: SD3 only, `[B, 77, 768+1280]` the
    CLIP-L/G penultimate hidden states concatenated on the last axis (as `StableDiffusion3Pipeline.encode_prompt`).
    `pooled`: FLUX `[B, 768]` CLIP-L pooled output; SD3 `[B, 2048]` CLIP-L/G pooled projections; None when unused.
    `mask`: `[B, L]` the T5 token mask, for families whose transformer masks the text (Chroma, LTX); else None.
    """

    t5: torch.Tensor
    clip: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.t5.shape[0]

    def map(self, fn) -> TextEmbeds:
        """A copy with `fn` applied to every tensor that is present."""
        return TextEmbeds(**{f.name: None if (v := getattr(self, f.name)) is None else fn(v) for f in fields(self)})

    def __getitem__(self, index) -> TextEmbeds:
        return self.map(lambda v: v[index])

    def to(self, *args, **kwargs) -> TextEmbeds:
        """Moved / cast like `Tensor.to`; the mask only moves (it stays an integer tensor)."""
        moved = self.map(lambda v: v.to(*args, **kwargs))
        if self.mask is not None:
            device = next((a for a in (*args, kwargs.get("device")) if isinstance(a, str | torch.device)), None)
            moved.mask = self.mask if device is None else self.mask.to(device)
        return moved

    def with_t5(self, t5: torch.Tensor) -> TextEmbeds:
        """The same CLIP parts and mask with another T5 part (e.g. the student's embeddings: same token ids)."""
        return TextEmbeds(t5=t5, clip=self.clip, pooled=self.pooled, mask=self.mask)

    def without_pooled(self) -> TextEmbeds:
        """The same conditioning with the pooled CLIP vector dropped (`zero_pooled`)."""
        return TextEmbeds(t5=self.t5, clip=self.clip, pooled=None, mask=self.mask)

    @staticmethod
    def cat(items: Sequence[TextEmbeds]) -> TextEmbeds:
        """Concatenate along the batch axis."""
        out = {}
        for f in fields(TextEmbeds):
            values = [getattr(item, f.name) for item in items]
            out[f.name] = None if values[0] is None else torch.cat(values, dim=0)
        return TextEmbeds(**out)


class PromptEncoder:
    """Tokenizes prompts for the T5 slot and computes the CLIP parts exactly like the family's diffusers pipeline.

    `clip_encoders` / `clip_tokenizers`: FLUX `[CLIPTextModel]` (pooled output only), SD3 `[CLIP-L, CLIP-G]`
    (`CLIPTextModelWithProjection`); empty when CLIP is not needed (FLUX with the pooled vector zeroed; Chroma and
    LTX have none). What the family needs comes from its adapter class (`distill.families`).
    """

    def __init__(
        self,
        family: str,
        t5_tokenizer,
        clip_tokenizers: Sequence = (),
        clip_encoders: Sequence[nn.Module] = (),
        max_sequence_length: int = 77,
    ):
        from .families import family_class

        self.spec = family_class(family)
        self.family = family
        self.t5_tokenizer = t5_tokenizer
        self.clip_tokenizers = list(clip_tokenizers)
        self.clip_encoders = [e.eval().requires_grad_(False) for e in clip_encoders]
        self.max_sequence_length = max_sequence_length

    @classmethod
    def from_pipeline(cls, pipe, max_sequence_length: int = 77, with_clip: bool = True) -> PromptEncoder:
        """Take tokenizers (and, if `with_clip`, CLIP encoders) from a loaded pipeline of a registered family."""
        from ..pipelines import detect_family
        from .families import family_class

        family = detect_family(pipe)
        spec = family_class(family)
        pairs = spec.clip_slots if with_clip else ()
        names, encs = [t for _, t in pairs], [e for e, _ in pairs]
        return cls(
            family,
            getattr(pipe, spec.t5_tokenizer),
            [getattr(pipe, n) for n in names],
            [getattr(pipe, e) for e in encs],
            max_sequence_length=max_sequence_length,
        )

    @property
    def has_clip(self) -> bool:
        return bool(self.clip_encoders)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """T5 token ids `[B, max_sequence_length]` (padding="max_length", truncation), as the pipelines do."""
        return self.t5_tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids

    @torch.no_grad()
    def encode_clip(self, prompts: Sequence[str], device=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """`(clip, pooled)` for the prompts; `(None, None)` without CLIP encoders."""
        if not self.clip_encoders:
            return None, None
        prompts = list(prompts)
        hidden, pooled = [], []
        for tokenizer, encoder in zip(self.clip_tokenizers, self.clip_encoders, strict=True):
            ids = tokenizer(
                prompts,
                padding="max_length",
                max_length=self.clip_tokenizers[0].model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            enc_device = device if device is not None else next(encoder.parameters()).device
            out = encoder(ids.to(enc_device), output_hidden_states=self.spec.clip_hidden)
            if not self.spec.clip_hidden:
                pooled.append(out.pooler_output.to(encoder.dtype))
            else:
                pooled.append(out[0])
                hidden.append(out.hidden_states[-2].to(encoder.dtype))
        clip = torch.cat(hidden, dim=-1) if hidden else None
        return clip, torch.cat(pooled, dim=-1)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], t5_encoder: nn.Module) -> TextEmbeds:
        """Full conditioning with `t5_encoder` (teacher or student) in the T5 slot, without gradients; with the T5
        token mask when the family's transformer takes it (also given to the encoder when its pipeline does)."""
        device = next(t5_encoder.parameters()).device
        ids = self.tokenize(prompts).to(device)
        mask = t5_token_mask(ids)
        t5 = t5_encoder(ids, attention_mask=mask if self.spec.encoder_mask else None)[0]
        clip, pooled = self.encode_clip(prompts)
        return TextEmbeds(t5=t5, clip=clip, pooled=pooled, mask=mask if self.spec.text_mask else None)
