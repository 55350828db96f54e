"""Fidelity metrics of a student's outputs against the teacher's: latents MSE, image PSNR / SSIM, CLIP score."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def latent_mse(student: torch.Tensor, teacher: torch.Tensor) -> list[float]:
    """Per-sample mean squared difference of two latent batches (float64 accumulation)."""
    diff = student.double() - teacher.double()
    return diff.pow(2).flatten(1).mean(dim=1).tolist()


def psnr(image: Image.Image, reference: Image.Image) -> float:
    """Peak signal-to-noise ratio in dB of 8-bit RGB images (`inf` for identical images)."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64)
    b = np.asarray(reference.convert("RGB"), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(image: Image.Image, reference: Image.Image) -> float:
    """Structural similarity of 8-bit RGB images (scikit-image, per channel, 7-pixel window or smaller)."""
    from skimage.metrics import structural_similarity

    a = np.asarray(image.convert("RGB"))
    b = np.asarray(reference.convert("RGB"))
    side = min(a.shape[0], a.shape[1])
    window = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255, win_size=window))


class ClipScorer:
    """CLIP score `100 * max(cos(image, text), 0)` (as torchmetrics defines it) with a local or hub CLIP model."""

    def __init__(self, source: str, device: torch.device | str = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        self.source = source
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(source).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(source)

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """One score per (image, prompt) pair."""
        inputs = self.processor(
            text=list(prompts), images=list(images), return_tensors="pt", padding="max_length", truncation=True
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        image_features = self.model.get_image_features(pixel_values=inputs["pixel_values"])
        text_features = self.model.get_text_features(input_ids=inputs["input_ids"])
        image_features = _features(image_features)
        text_features = _features(text_features)
        cosine = torch.nn.functional.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
        return (100 * cosine.clamp(min=0)).tolist()


def _features(output) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor from `get_*_features`."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    return output[0]


def mean(values: Sequence[float]) -> float:
    """Mean that keeps `inf` (identical images) instead of warning; NaN for no values."""
    values = list(values)
    return float(np.mean(values)) if values else math.nan
