"""FLUX.1 with the paper's distilled T5-Base instead of T5-XXL, in stock diffusers.

    pip install t5-compact
    python examples/diffusers_flux.py "A panda holding a sign that says 'hello'." -o panda.png

Downloads black-forest-labs/FLUX.1-schnell (gated: accept its licence and `hf auth login` first) and
LifuWang/DistillT5 (~0.5 GB instead of T5-XXL's ~9.5 GB).
"""

from __future__ import annotations

import argparse

import torch
from diffusers import FluxPipeline

from t5_compact import T5CompactEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="A panda holding a sign that says 'hello'.")
    parser.add_argument("-o", "--output", default="flux_compact.png")
    parser.add_argument("--base", default="black-forest-labs/FLUX.1-schnell")
    parser.add_argument("--encoder", default="LifuWang/DistillT5")
    parser.add_argument("--steps", type=int, default=4)  # schnell: 4 steps, no guidance; FLUX.1-dev: 28 and 3.5
    parser.add_argument("--guidance", type=float, default=0.0)
    args = parser.parse_args()

    dtype = torch.bfloat16
    compact = T5CompactEncoder.from_pretrained(args.encoder, dtype=dtype)
    pipe = FluxPipeline.from_pretrained(args.base, text_encoder_2=compact, dtype=dtype)
    if torch.cuda.is_available():
        pipe.enable_model_cpu_offload()  # fits a 24 GB GPU; use pipe.to("cuda") with more memory
    image = pipe(
        args.prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        max_sequence_length=256,
        generator=torch.Generator("cpu").manual_seed(0),
    ).images[0]
    image.save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
