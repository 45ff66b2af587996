"""The text side's one-off cost (app/text_side.py) on a CPU: embedding the label vocabulary
(2,123 words of precompute/vocab/visual_concepts.txt as "a photo of a {word}") with an
OpenCLIP ViT-B-32 text tower (random weights: the cost is the same), then ranking every
latent's top and bottom entries for several SAE widths. Prints one Markdown table; never asserts.

    nice -n 5 .venv/bin/python benchmarks/bench_text_side.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import open_clip
import torch

from app.text_side import rank_sides
from precompute.labels import TEMPLATE, read_vocab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    words = list(dict.fromkeys(read_vocab()))
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    tok = open_clip.get_tokenizer("ViT-B-32")
    t0 = time.perf_counter()
    with torch.inference_mode():
        emb = torch.cat(
            [
                model.encode_text(tok([TEMPLATE.format(w) for w in words[i : i + 256]]))
                for i in range(0, len(words), 256)
            ]
        )
    emb = torch.nn.functional.normalize(emb.float(), dim=-1).numpy()
    t_embed = time.perf_counter() - t0
    print(f"| step | size | seconds ({args.threads} threads) |\n|---|---|---|")
    print(f"| embed the vocabulary (ViT-B-32 text tower) | {len(words)} prompts | {t_embed:.1f} |")
    rng = np.random.default_rng(0)
    for f in (1024, 16384, 65536):
        dirs = rng.normal(size=(f, emb.shape[1])).astype(np.float32)
        t0 = time.perf_counter()
        rank_sides(dirs, emb)
        print(f"| rank top/bottom 8 per latent | {f} latents × {len(words)} | {time.perf_counter() - t0:.2f} |")


if __name__ == "__main__":
    main()
