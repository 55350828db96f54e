"""LTX-Video with a compact T5 in its `text_encoder` slot, in stock diffusers (its T5-XXL outweighs the transformer).

    pip install t5-compact
    python examples/diffusers_ltx.py "a red fox running through snow" --encoder runs/ltx-base/student -o fox.gif

Any compact encoder of LTX-Video's text width (4096) fits; one trained for LTX-Video (`examples/configs/ltx-base.yaml`)
is what to expect quality from, a FLUX-trained one (`LifuWang/DistillT5`) is only the right shape. `load_pipeline`
finds the slot, checks the width against the transformer's `caption_channels` before loading it, and casts.
"""

from __future__ import annotations

import argparse

import torch

import t5_compact
from t5_compact import T5CompactEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="a red fox running through fresh snow, golden hour")
    parser.add_argument("-o", "--output", default="ltx_compact.gif")
    parser.add_argument("--base", default="Lightricks/LTX-Video")
    parser.add_argument("--encoder", default="LifuWang/DistillT5", help="folder, .safetensors file or hub id")
    parser.add_argument("--frames", type=int, default=49, help="8k+1")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()

    dtype = torch.bfloat16
    compact = T5CompactEncoder.from_pretrained(args.encoder, dtype=dtype)
    pipe = t5_compact.load_pipeline(args.base, compact, torch_dtype=dtype)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    frames = pipe(
        args.prompt,
        negative_prompt="worst quality, blurry, jittery",
        width=704,
        height=480,
        num_frames=args.frames,
        num_inference_steps=args.steps,
        generator=torch.Generator("cpu").manual_seed(0),
    ).frames[0]
    frames[0].save(args.output, save_all=True, append_images=frames[1:], duration=40, loop=0)
    print(f"wrote {args.output} ({len(frames)} frames)")


if __name__ == "__main__":
    main()
