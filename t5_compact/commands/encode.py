"""`t5-compact encode`: prompt embeddings from a compact encoder, tokenized the way a T5 pipeline does."""

from __future__ import annotations

import argparse

from . import DTYPES, check_output_file, check_positive, run_reporting_errors

HELP = "Encode prompts with a compact encoder; print shapes and statistics, optionally save them."

# `max_sequence_length` without --max-length and without a pipeline (FluxPipeline's default).
DEFAULT_MAX_LENGTH = 512


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `t5-compact encode`."""
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more prompts")
    parser.add_argument("--encoder", required=True, help="compact encoder: folder, .safetensors file or hub id")
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--tokenizer", help="T5 tokenizer folder or hub id (e.g. google/t5-v1_1-xxl); the paper's release has none"
    )
    src.add_argument(
        "--pipeline", help="a diffusers pipeline folder or hub id with a T5 slot (FLUX, SD3, Chroma, ...) whose T5 "
        "tokenizer and attention mask to use"
    )  # fmt: skip
    parser.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens per prompt (default: the student's trained length from its training_info.json, else the "
        "pipeline's: FLUX 512, SD3 256)",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="encoder dtype (default: the checkpoint's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    parser.add_argument("--out", default=None, help="write prompt_embeds (and input_ids) to this .safetensors file")


def load_tokenizer(tokenizer: str | None, pipeline: str | None, encoder: str):
    """`(tokenizer, slot)`: `--tokenizer`, the tokenizer paired with the pipeline's T5 slot (`tokenizer_2` for
    FLUX, `tokenizer_3` for SD3, `tokenizer` for Chroma / PixArt / LTX ...), or the encoder folder's; `slot` is the
    pipeline's `T5Slot` (None without `--pipeline`)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from ..pipeline_slots import check_kind
    from ..pipelines import pipeline_t5_slot

    if tokenizer:
        return AutoTokenizer.from_pretrained(tokenizer), None
    if pipeline:
        slot = pipeline_t5_slot(pipeline)
        check_kind(slot)
        return AutoTokenizer.from_pretrained(pipeline, subfolder=slot.tokenizer), slot
    if (Path(encoder) / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(encoder), None
    from ..errors import UsageError

    raise UsageError(
        f"{encoder}: no tokenizer found (the paper's checkpoints ship none); pass --tokenizer PATH_OR_ID "
        "(a T5 tokenizer such as google/t5-v1_1-xxl) or --pipeline BASE to use the pipeline's T5 tokenizer"
    )


def report_truncation(tokenizer, prompts: list[str], max_length: int) -> int:
    """Print one line when some prompts have more than `max_length` tokens (they are cut); returns how many."""
    lengths = [len(ids) for ids in tokenizer(list(prompts), truncation=False).input_ids]
    cut = [n for n in lengths if n > max_length]
    if cut:
        print(f"note: {len(cut)} prompt(s) truncated to {max_length} tokens (longest has {max(cut)})")
    return len(cut)


def run(args: argparse.Namespace) -> int:
    """Encode the prompts; exit code 2 with a one-line message for a bad encoder, tokenizer or path."""
    return run_reporting_errors("encode", _encode, args)


def _encode(args: argparse.Namespace) -> int:
    """Tokenize (padded to max length) and encode as the pipeline does: with the T5 attention mask for pipelines that
    pass one to their encoder (Chroma, PixArt, HiDream), without for the others (FLUX, SD3, LTX, CogVideoX, ...)."""
    import json

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from ..bench.report import format_count
    from ..devices import check_device
    from ..errors import UsageError
    from ..modeling_t5_compact import T5CompactEncoder
    from ..pipeline_slots import default_max_sequence_length, passes_t5_mask
    from ..training.info import trained_length

    check_positive(args, "max_length")
    check_device(args.device)
    if args.out:
        check_output_file(args.out, (".safetensors",), "--out")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = T5CompactEncoder.from_pretrained(args.encoder, torch_dtype=args.dtype, device=device)
    tokenizer, slot = load_tokenizer(args.tokenizer, args.pipeline, args.encoder)
    pipeline_default = default_max_sequence_length(slot.pipeline) if slot else None
    max_length = args.max_length or trained_length(args.encoder) or pipeline_default or DEFAULT_MAX_LENGTH
    report_truncation(tokenizer, args.prompts, max_length)
    batch = tokenizer(args.prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    ids = batch.input_ids
    masked = slot is not None and passes_t5_mask(slot.pipeline)
    if int(ids.max()) >= encoder.config.vocab_size:
        raise UsageError(
            f"the tokenizer produced id {int(ids.max())} but {args.encoder} has vocab_size "
            f"{encoder.config.vocab_size}; use the T5 tokenizer the encoder was trained with"
        )
    mask = batch.attention_mask.to(encoder.device) if masked else None
    with torch.inference_mode():
        embeds = encoder(ids.to(encoder.device), attention_mask=mask, output_hidden_states=False)[0]
    print(f"encoder: {args.encoder} ({format_count(encoder.num_parameters())} params, {encoder.dtype}, {device})")
    print(f"prompt_embeds: {tuple(embeds.shape)} {embeds.dtype}" + (" (T5 attention mask applied)" if masked else ""))
    stats = embeds.float()
    for i, prompt in enumerate(args.prompts):
        e = stats[i]
        tokens = int(batch.attention_mask[i].sum())
        print(
            f"[{i}] tokens {tokens}/{max_length} mean {e.mean():+.4f} std {e.std():.4f} "
            f"min {e.min():+.4f} max {e.max():+.4f} finite {bool(torch.isfinite(e).all())}  {prompt[:60]!r}"
        )
    if args.out:
        tensors = {"prompt_embeds": embeds.detach().cpu().contiguous(), "input_ids": ids.contiguous()}
        tensors["attention_mask"] = batch.attention_mask.contiguous()
        metadata = {"prompts": json.dumps(args.prompts), "encoder": str(args.encoder), "max_length": str(max_length)}
        try:
            save_file(tensors, args.out, metadata=metadata)
        except SafetensorError as err:  # an unwritable folder, a full disk
            raise OSError(f"{args.out}: cannot write ({err})") from err
        print(f"wrote {args.out}")
    return 0 if bool(torch.isfinite(stats).all()) else 1
