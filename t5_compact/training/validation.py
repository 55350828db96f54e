"""Validation images: for fixed prompts and seeds, teacher and student samples side by side as one PNG grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..distill import FamilyAdapter, TextEmbeds, heldout_latents, sample


@torch.no_grad()
def decode_latents(adapter: FamilyAdapter, vae, latents: torch.Tensor, height: int, width: int) -> list[Image.Image]:
    """Decode final latents to PIL images as the family's pipeline does (`adapter.decode`; video: first frame)."""
    images = adapter.decode(vae, latents, height, width)
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Paste equally sized images into a rows x columns grid."""
    w, h = rows[0][0].size
    canvas = Image.new("RGB", (w * len(rows[0]), h * len(rows)))
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            canvas.paste(img, (c * w, r * h))
    return canvas


@torch.no_grad()
def save_validation_grid(
    path: str | Path,
    adapter: FamilyAdapter,
    vae,
    teacher: TextEmbeds,
    student_t5: torch.Tensor,
    *,
    num_steps: int,
    height: int,
    width: int,
    guidance: float | None,
    seed: int = 0,
) -> Path:
    """Sample each prompt with the teacher's and the student's embeddings from the same noise; one row per prompt,
    columns teacher | student. Returns the PNG path."""
    latents = heldout_latents(adapter, len(teacher), height, width, seed)
    kwargs = dict(num_steps=num_steps, height=height, width=width, guidance=guidance)
    teacher_images = decode_latents(adapter, vae, sample(adapter, teacher, latents, **kwargs), height, width)
    student_cond = teacher.with_t5(student_t5)
    student_images = decode_latents(adapter, vae, sample(adapter, student_cond, latents, **kwargs), height, width)
    image = grid([[t, s] for t, s in zip(teacher_images, student_images, strict=True)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def image_array(path: str | Path) -> np.ndarray:
    """A saved grid as an array (tests)."""
    return np.asarray(Image.open(path))
