"""Validation grids a person can read: tiles upscaled (nearest) to >= 256 px, teacher | student columns, prompt rows,
the step number; and the same grid in TensorBoard."""

from __future__ import annotations

import numpy as np
from PIL import Image

from t5_compact.training import validation

COLORS = [[(200, 30, 30), (30, 200, 30)], [(30, 30, 200), (200, 200, 30)]]
PROMPTS = ["a red cat", "a very long prompt about a lighthouse on a cliff at dusk with seagulls and a storm coming in"]


def _tiles(size: int = 16) -> list[list[Image.Image]]:
    return [[Image.new("RGB", (size, size), color) for color in row] for row in COLORS]


def test_labelled_grid_upscales_and_labels() -> None:
    image = validation.grid(_tiles(), PROMPTS, step=8)
    left, top = validation.LABEL_WIDTH, validation.HEADER_HEIGHT
    assert image.size == (left + 2 * 256, top + 2 * 256)  # 16 px samples, 16x nearest
    pixels = np.asarray(image)
    for r, row in enumerate(COLORS):
        for c, color in enumerate(row):
            tile = pixels[top + r * 256 : top + (r + 1) * 256, left + c * 256 : left + (c + 1) * 256]
            assert (tile == color).all()  # nearest: no blur, nothing drawn over the samples

    def inked(box: tuple[int, int, int, int]) -> bool:
        x0, y0, x1, y1 = box
        return bool((pixels[y0:y1, x0:x1] < 128).any())

    assert inked((0, 0, left, top))  # "step 8"
    assert inked((left, 0, left + 256, top)) and inked((left + 256, 0, left + 512, top))  # teacher | student
    assert inked((0, top, left, top + 256)) and inked((0, top + 256, left, top + 512))  # one prompt per row
    assert not inked((left - 4, top, left, top + 512))  # the long prompt is cut before it reaches the tiles
    plain = validation.grid(_tiles(), PROMPTS, step=80)
    assert not np.array_equal(np.asarray(plain)[:top, :left], pixels[:top, :left])  # the step is drawn


def test_large_tiles_are_kept_and_unlabelled_grid_has_no_bands() -> None:
    image = validation.grid(_tiles(300))
    assert image.size == (600, 600)


def test_grid_is_logged_to_tensorboard(tmp_path) -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accelerator = Accelerator(log_with="tensorboard", project_dir=str(tmp_path), cpu=True)
    try:
        accelerator.init_trackers("run")
        image = validation.grid(_tiles(), PROMPTS, step=8)
        validation.log_grid(accelerator, image, 8)
        accelerator.end_training()
    finally:
        AcceleratorState._reset_state(True)
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    events.Reload()
    (logged,) = events.Images("validation")
    assert (logged.step, logged.width, logged.height) == (8, image.width, image.height)
