"""`t5-compact encode`: prompt embeddings from a compact encoder, tokenized the way FLUX / SD3 pipelines do."""

from __future__ import annotations

import argparse

from . import DTYPES, run_reporting_errors

HELP = "Encode prompts with a compact encoder; print shapes and statistics, optionally save them."

# The pipelines' default `max_sequence_length` when none is given.
DEFAULT_MAX_LENGTH = {"flux": 512, "sd3": 256, None: 512}
TOKENIZER_SLOTS = {"flux": "tokenizer_2", "sd3": "tokenizer_3"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `t5-compact encode`."""
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more prompts")
    parser.add_argument("--encoder", required=True, help="compact encoder: folder, .safetensors file or hub id")
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--tokenizer", help="T5 tokenizer folder or hub id (e.g. google/t5-v1_1-xxl); the paper's release has none"
    )
    src.add_argument("--pipeline", help="a FLUX/SD3 pipeline folder or hub id whose T5 tokenizer to use")
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
    """The T5 tokenizer: `--tokenizer`, the pipeline's `tokenizer_2`/`tokenizer_3`, or the encoder folder's."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from ..pipelines import pipeline_family

    if tokenizer:
        return AutoTokenizer.from_pretrained(tokenizer), None
    if pipeline:
        family = pipeline_family(pipeline)
        return AutoTokenizer.from_pretrained(pipeline, subfolder=TOKENIZER_SLOTS[family]), family
    if (Path(encoder) / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(encoder), None
    raise SystemExit(
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
    """Tokenize (padded to max length, no attention mask: as the pipelines), encode, report, optionally save."""
    import json

    import torch
    from safetensors.torch import save_file

    from ..modeling_t5_compact import T5CompactEncoder
    from ..training.info import trained_length

    if args.out and not args.out.endswith(".safetensors"):
        raise SystemExit(f"--out {args.out}: expected a .safetensors file name")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = T5CompactEncoder.from_pretrained(args.encoder, torch_dtype=args.dtype, device=device)
    tokenizer, family = load_tokenizer(args.tokenizer, args.pipeline, args.encoder)
    max_length = args.max_length or trained_length(args.encoder) or DEFAULT_MAX_LENGTH[family]
    report_truncation(tokenizer, args.prompts, max_length)
    batch = tokenizer(args.prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    ids = batch.input_ids
    if int(ids.max()) >= encoder.config.vocab_size:
        raise SystemExit(
            f"the tokenizer produced id {int(ids.max())} but {args.encoder} has vocab_size "
            f"{encoder.config.vocab_size}; use the T5 tokenizer the encoder was trained with"
        )
    with torch.inference_mode():
        embeds = encoder(ids.to(encoder.device), output_hidden_states=False)[0]
    print(f"encoder: {args.encoder} ({encoder.num_parameters() / 1e6:.1f} M params, {encoder.dtype}, {device})")
    print(f"prompt_embeds: {tuple(embeds.shape)} {embeds.dtype}")
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
        metadata = {"prompts": json.dumps(args.prompts), "encoder": str(args.encoder), "max_length": str(max_length)}
        save_file(tensors, args.out, metadata=metadata)
        print(f"wrote {args.out}")
    return 0 if bool(torch.isfinite(stats).all()) else 1
