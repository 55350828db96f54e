"""Validation images: for fixed prompts and seeds, teacher and student samples side by side as one labelled PNG grid
(also logged to TensorBoard): tiles upscaled (nearest) to at least 256 px, columns teacher | student, one row per
prompt with the prompt on its left, and the step number in the corner."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..distill import FamilyAdapter, TextEmbeds, heldout_latents, sample


@torch.no_grad()
def decode_latents(adapter: FamilyAdapter, vae, latents: torch.Tensor, height: int, width: int) -> list[Image.Image]:
    """Decode final latents to PIL images as the family's pipeline does (`adapter.decode`; video: first frame)."""
    images = adapter.decode(vae, latents, height, width)
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]


MIN_TILE = 256  # smallest tile side in the grid; smaller samples are upscaled by an integer factor (nearest)
LABEL_WIDTH = 240  # the prompt column on the left
HEADER_HEIGHT = 28  # the column labels and step number on top
BACKGROUND, INK = (255, 255, 255), (0, 0, 0)


def _font(size: int = 16) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text` cut (with "...") to fit `width` pixels."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def upscale(image: Image.Image, min_side: int = MIN_TILE) -> Image.Image:
    """`image` enlarged by the smallest integer factor that makes both sides >= `min_side` (nearest: no blur)."""
    factor = math.ceil(min_side / min(image.size))
    return image if factor <= 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def grid(
    rows: list[list[Image.Image]],
    prompts: Sequence[str] | None = None,
    columns: Sequence[str] = ("teacher", "student"),
    step: int | None = None,
) -> Image.Image:
    """Equally sized images in a rows x columns grid, tiles upscaled to >= `MIN_TILE`; with `prompts`, labelled:
    column names on top, each row's prompt (cut to fit) on its left, `step N` in the top-left corner."""
    rows = [[upscale(img) for img in row] for row in rows]
    w, h = rows[0][0].size
    left, top = (LABEL_WIDTH, HEADER_HEIGHT) if prompts is not None else (0, 0)
    canvas = Image.new("RGB", (left + w * len(rows[0]), top + h * len(rows)), BACKGROUND)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            canvas.paste(img, (left + c * w, top + r * h))
    if prompts is None:
        return canvas
    draw, font = ImageDraw.Draw(canvas), _font()
    if step is not None:
        draw.text((6, 6), f"step {step}", fill=INK, font=font)
    for c, name in enumerate(columns):
        x = left + c * w + (w - draw.textlength(name, font=font)) / 2
        draw.text((x, 6), name, fill=INK, font=font)
    for r, prompt in enumerate(prompts):
        draw.text((6, top + r * h + h // 2 - 8), _fit(draw, prompt, font, LABEL_WIDTH - 12), fill=INK, font=font)
    return canvas


def log_grid(accelerator, image: Image.Image, step: int) -> None:
    """Log the grid to TensorBoard (tag `validation`), when the run reports there."""
    for tracker in getattr(accelerator, "trackers", None) or []:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("validation", np.asarray(image), step, dataformats="HWC")


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
    prompts: Sequence[str] | None = None,
    step: int | None = None,
    accelerator=None,
) -> Path:
    """Sample each prompt with the teacher's and the student's embeddings from the same noise; one row per prompt,
    columns teacher | student, labelled when `prompts` are given, and logged to `accelerator`'s TensorBoard.
    Returns the PNG path."""
    latents = heldout_latents(adapter, len(teacher), height, width, seed)
    kwargs = dict(num_steps=num_steps, height=height, width=width, guidance=guidance)
    teacher_images = decode_latents(adapter, vae, sample(adapter, teacher, latents, **kwargs), height, width)
    student_cond = teacher.with_t5(student_t5)
    student_images = decode_latents(adapter, vae, sample(adapter, student_cond, latents, **kwargs), height, width)
    image = grid([[t, s] for t, s in zip(teacher_images, student_images, strict=True)], prompts, step=step)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    if accelerator is not None and step is not None:
        log_grid(accelerator, image, step)
    return path


def image_array(path: str | Path) -> np.ndarray:
    """A saved grid as an array (tests)."""
    return np.asarray(Image.open(path))
