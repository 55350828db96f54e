"""What commands print: startup noise hidden unless `--verbose`, parameter counts at any size, eval's dtype."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from t5_compact.bench.report import format_count
from t5_compact.cli import build_parser, main
from t5_compact.commands.eval import choose_dtype

ROOT = Path(__file__).resolve().parents[1]
NOISY = """
import importlib.util, logging, sys
from t5_compact.quiet import configure_output
configure_output(sys.argv[1] == "verbose")
logging.basicConfig(level=logging.INFO)  # as `train` does
import transformers
if importlib.util.find_spec("torchvision") is None:
    transformers.CLIPImageProcessor  # the real fallback warning (diffusers triggers it on import)
else:
    logging.getLogger("transformers.utils.import_utils").warning(
        "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`"
    )
logging.getLogger("accelerate.checkpointing").info("[RANK 0] Optimizer state saved in x/optimizer.bin")
logging.getLogger("t5_compact.training.loop").info("stage 0 (semantics): resolution 32")
logging.getLogger("accelerate.accelerator").warning("a real accelerate warning")
from t5_compact.tiny import tiny_compact_encoder
tiny_compact_encoder().save_pretrained(sys.argv[2])
from huggingface_hub.utils import are_progress_bars_disabled
print("download bars disabled:", are_progress_bars_disabled())
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_startup_noise_is_hidden_unless_verbose(tmp_path: Path, verbose: bool) -> None:
    mode = "verbose" if verbose else "quiet"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    result = subprocess.run(
        [sys.executable, "-c", NOISY, mode, str(tmp_path / "model")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    err = result.stderr
    for noise in ("requires torchvision (not installed)", "Optimizer state saved", "Writing model shards"):
        assert (noise in err) == verbose, (noise, err)
    assert "stage 0 (semantics)" in err and "a real accelerate warning" in err  # what a user needs stays
    assert "download bars disabled: False" in result.stdout  # hub downloads keep their progress bars


def test_every_command_takes_verbose() -> None:
    assert build_parser().parse_args(["export", "a", "b", "--verbose"]).verbose
    assert not build_parser().parse_args(["export", "a", "b"]).verbose


def test_encode_prints_parameters_at_any_size(tiny_encoder_dir: Path, tmp_path: Path, capsys) -> None:
    from t5_compact.tiny import tiny_t5_tokenizer

    tiny_t5_tokenizer().save_pretrained(tmp_path / "tok")
    assert main(["encode", "--encoder", str(tiny_encoder_dir), "--tokenizer", str(tmp_path / "tok"), "a cat"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert " K params," in line and "0.0 M" not in line, line
    assert (format_count(4_762_310_656), format_count(129_600_000), format_count(12_416), format_count(512)) == (
        "4.76 B",
        "129.6 M",
        "12.4 K",
        "512",
    )


@pytest.mark.parametrize(("device", "dtype"), [("cpu", "fp32"), ("cuda", "bf16"), ("cuda:1", "bf16")])
def test_eval_dtype_defaults_to_fp32_on_cpu_and_says_so(device: str, dtype: str, capsys) -> None:
    args = build_parser().parse_args(
        ["eval", "--pipeline", "p", "--students", "s", "--prompts", "x", "--device", device]
    )
    assert args.dtype is None
    assert choose_dtype(args) == dtype and args.dtype == dtype
    assert capsys.readouterr().out == f"eval: computing in {dtype} (the default on {device}; --dtype to change)\n"
    args = build_parser().parse_args(
        ["eval", "--pipeline", "p", "--students", "s", "--prompts", "x", "--dtype", "bf16"]
    )
    assert choose_dtype(args) == "bf16" and capsys.readouterr().out == ""
