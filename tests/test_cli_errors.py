"""The error contract of every command: a bad input prints one line naming it and exits with code 2, no traceback."""

from __future__ import annotations

import pytest
import torch

from t5_compact.cli import main


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("t5-compact")]
    assert len(lines) == 1 and lines[0].startswith(f"t5-compact {command}: error: "), err
    assert err.strip().splitlines()[-1] == lines[0], err
    return lines[0]


@pytest.fixture
def paths(tmp_path, tiny_flux_dir, tiny_encoder_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "a-file.txt").write_text("not a folder")
    (tmp_path / "p.txt").write_text("a red cat\na blue dog\n")
    return {
        "tmp": tmp_path,
        "flux": str(tiny_flux_dir),
        "enc": str(tiny_encoder_dir),
        "file": str(tmp_path / "a-file.txt"),
        "prompts": str(tmp_path / "p.txt"),
    }


CASES = [
    # (argv with {placeholders}, the command, what the line must say)
    ("bench --encoders nonsense --no-memory", "bench", "nonsense: no such file or folder, and not a built-in name"),
    ("bench --encoders a=base,a=small", "bench", "duplicate labels"),
    ("bench --repeats 0", "bench", "--repeats must be positive"),
    ("eval --pipeline {flux} --students {enc} --prompts {tmp}/empty", "eval", "empty: no prompt files"),
    ("eval --pipeline {flux} --students {enc} --prompts {prompts} --steps 0", "eval", "--steps must be positive"),
    ("cache-teacher --sources {prompts}", "cache-teacher", "set teacher_cache"),
    ("cache-teacher --sources {tmp}/nope.txt --teacher_cache {tmp}/c", "cache-teacher", "nope.txt: prompt file not"),
    ("cache-teacher --sources {prompts} --teacher_cache {file}", "cache-teacher", "a-file.txt: exists and is not a"),
    ("encode --encoder {enc} a", "encode", "no tokenizer found"),
    ("encode --encoder {enc} --pipeline {flux} --max-length -5 a", "encode", "--max-length must be positive, got -5"),
    ("encode --encoder {enc} --pipeline {flux} --out {file}/x.safetensors a", "encode", "a-file.txt"),
    ("encode --encoder {enc} --pipeline {flux} --out {tmp}/empty a", "encode", "ending in .safetensors"),
    ("encode --encoder {enc} --pipeline {flux} --out {tmp}/dir.safetensors a", "encode", "is a folder"),
    ("generate --pipeline {flux} --encoder {enc} --steps -1 a", "generate", "--steps must be positive, got -1"),
    ("generate --pipeline {flux} --encoder {enc} -o {tmp}/x.txt a", "generate", "x.txt: expected an image file"),
    ("generate --pipeline {flux} --encoder {enc} -o {file}/x.png a", "generate", "a-file.txt"),
    ("train --sources {prompts} --learning_rate -1", "train", "'learning_rate' must be zero or positive, got -1.0"),
    ("train --sources {prompts} --output_dir {file}", "train", "a-file.txt: exists and is not a folder"),
    ("convert {enc} {file}/out", "convert", "a-file.txt"),
    ("encode --no-such-flag", "encode", "the following arguments are required: PROMPT, --encoder"),
]


@pytest.mark.parametrize(("argv", "command", "message"), CASES, ids=[c[0].split(" {")[0] + c[2][:20] for c in CASES])
def test_bad_input_is_one_line_and_exit_code_2(paths, capsys, argv, command, message):
    if argv.startswith("encode --no-such-flag"):
        with pytest.raises(SystemExit) as exit_info:
            main(argv.format(**paths).split())
        assert exit_info.value.code == 2
    else:
        assert main(argv.format(**paths).split()) == 2
    assert message in one_error_line(capsys, command)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("command", ["encode", "generate", "bench", "eval"])
def test_device_cuda_without_a_gpu_is_not_blamed_on_a_file(paths, capsys, command):
    argv = {
        "encode": ["encode", "--encoder", paths["enc"], "--pipeline", paths["flux"], "a"],
        "generate": ["generate", "--pipeline", paths["flux"], "--encoder", paths["enc"], "a"],
        "bench": ["bench", "--encoders", "tiny", "--no-memory"],
        "eval": ["eval", "--pipeline", paths["flux"], "--students", paths["enc"], "--prompts", paths["prompts"]],
    }[command]
    assert main([*argv, "--device", "cuda"]) == 2
    line = one_error_line(capsys, command)
    assert "no CUDA GPU is available" in line and paths["enc"] not in line


def test_loading_onto_a_missing_gpu_raises_a_device_error(tiny_encoder_dir):
    from t5_compact import T5CompactEncoder
    from t5_compact.errors import DeviceError

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA GPU")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        T5CompactEncoder.from_pretrained(tiny_encoder_dir, device="cuda")
