"""`t5-compact bench`: size, memory and encode latency of T5-XXL and compact encoders, side by side.

`models` parses and builds encoders (random geometries without slow init), `latency` times them alternating,
`memory` measures each in a fresh process, `sizes` computes bytes on disk, `report` writes markdown / JSON / PNG,
and `run` ties them together.
"""

from .models import EncoderSpec, build_encoder, count_parameters, parse_encoders, plain_twin
from .report import BenchResult, EncoderResult, to_markdown, write_outputs
from .run import BenchSettings, run_bench

__all__ = [
    "BenchResult",
    "BenchSettings",
    "EncoderResult",
    "EncoderSpec",
    "build_encoder",
    "count_parameters",
    "parse_encoders",
    "plain_twin",
    "run_bench",
    "to_markdown",
    "write_outputs",
]
