"""Command output limited to what a user needs; `--verbose` shows the libraries' own chatter again.

Hidden by default: transformers' "`CLIPImageProcessor` requires torchvision (not installed); falling back ..."
warnings (diffusers imports those processors; the encoders never use them), accelerate's INFO lines (checkpoint
internals) and transformers' "Writing model shards" / "Loading weights" progress bars. Warnings and errors from
every library, download progress bars, and t5-compact's own progress and INFO lines still show.
"""

from __future__ import annotations

import logging

TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return TORCHVISION_FALLBACK not in record.getMessage()


def configure_output(verbose: bool = False) -> None:
    """Hide the startup noise above (idempotent); with `verbose`, leave every library's output as it is."""
    if verbose:
        return
    import_logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _DropTorchvisionFallback) for f in import_logger.filters):
        import_logger.addFilter(_DropTorchvisionFallback())
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    from huggingface_hub import constants
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # also turns off huggingface_hub's bars, which downloads need:
    if not constants.HF_HUB_DISABLE_PROGRESS_BARS:  # so turn those back on, unless the user disabled them
        enable_progress_bars()
