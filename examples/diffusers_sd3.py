"""Stable Diffusion 3.5 with a distilled T5 in the `text_encoder_3` slot, in stock diffusers.

    pip install t5-compact
    python examples/diffusers_sd3.py "a red cube on a blue sphere" -o sd3.png

The paper released FLUX students only; this runs any compact encoder whose output width is SD3's 4096 (for
example one trained with `t5-compact train --config examples/configs/sd3-base.yaml`). The pipeline
(stabilityai/stable-diffusion-3.5-medium) is gated: accept its licence and `hf auth login` first.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import StableDiffusion3Pipeline

from t5_compact import T5CompactEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="a red cube on top of a blue sphere")
    parser.add_argument("-o", "--output", default="sd3_compact.png")
    parser.add_argument("--base", default="stabilityai/stable-diffusion-3.5-medium")
    parser.add_argument("--encoder", default="LifuWang/DistillT5", help="folder, .safetensors file or hub id")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--guidance", type=float, default=4.5)
    args = parser.parse_args()

    dtype = torch.bfloat16
    compact = T5CompactEncoder.from_pretrained(args.encoder, dtype=dtype)
    pipe = StableDiffusion3Pipeline.from_pretrained(args.base, text_encoder_3=compact, dtype=dtype)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    image = pipe(
        args.prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=torch.Generator("cpu").manual_seed(0),
    ).images[0]
    image.save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
