"""`t5-compact eval`: how closely students follow the teacher on held-out prompts, per category.

`prompts` reads categorised prompt files, `metrics` holds latents / image / CLIP metrics, `run` drives the teacher
and students (L_vision from `t5_compact.distill.heldout_vision_loss`, shared with training), and `report` writes
JSON, markdown, charts and image grids.
"""

from .prompts import load_prompt_categories
from .report import to_dict, to_markdown, write_report
from .run import EvalResult, EvalSettings, StudentResult, parse_students, run_eval

__all__ = [
    "EvalResult",
    "EvalSettings",
    "StudentResult",
    "load_prompt_categories",
    "parse_students",
    "run_eval",
    "to_dict",
    "to_markdown",
    "write_report",
]
