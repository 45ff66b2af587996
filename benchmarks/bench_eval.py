"""Cost of `clipsae eval zeroshot` and of one gradient heat-map comparison, on real photos
written as a CIFAR-10 binary test batch.

    .venv/bin/python benchmarks/bench_eval.py                   # ViT-B-32, 128 images, CPU
    .venv/bin/python benchmarks/bench_eval.py --device cuda --n 10000 --batch-size 256

Full-size architecture with random weights (speed does not depend on weight values), so
the accuracies it prints are chance level and mean nothing; the times are what it is for.
Rows: the bare forward (encode_image on preprocessed tensors), zero-shot with an `embed`
SAE (one forward per image: the splices map its output), and with a blocks.9.resid_post
SAE on all tokens (1 + 1 + n_SAEs forwards per image). Never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evaluation.common import ModelChoice, NamedSAE, load_clip
from evaluation.datasets import open_dataset
from evaluation.heatmap import compare, scale_latents
from evaluation.prompts import templates_for
from evaluation.zeroshot import zeroshot
from sae_core.config import SAEConfig
from sae_core.sae import SparseAutoencoder


def bundled_photos(n: int) -> np.ndarray:
    """n 32×32 crops of the photos that ship with scikit-image / scikit-learn."""
    from sklearn.datasets import load_sample_images
    from skimage import data

    photos = [np.asarray(im) for im in load_sample_images().images]
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        photos.append(getattr(data, name)())
    rng = np.random.default_rng(0)
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        p = photos[i % len(photos)]
        side = int(rng.integers(64, min(p.shape[:2])))
        y, x = rng.integers(0, p.shape[0] - side), rng.integers(0, p.shape[1] - side)
        out[i] = np.asarray(Image.fromarray(p[y : y + side, x : x + side]).resize((32, 32), Image.BICUBIC))
    return out


def sae_for(meta: dict, d_in: int, d_sae: int, k: int, seed: int) -> NamedSAE:
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=k, metadata=meta)
    return NamedSAE(f"topk{k}_{seed}", Path("."), SparseAutoencoder(cfg, torch.Generator().manual_seed(seed)).eval())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        pixels = bundled_photos(a.n)
        labels = np.arange(a.n) % 10
        planes = pixels.transpose(0, 3, 1, 2).reshape(a.n, -1)
        np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tofile(Path(tmp) / "test_batch.bin")
        data = open_dataset(tmp)
        templates = templates_for("cifar10")
        base = {"model_name": a.model, "pretrained": "none", "seed": 0}
        rows = []
        for hook, tokens, d_in, label in (
            ("embed", "cls", 512, "embed SAE"),
            ("blocks.9.resid_post", "all", 768, "blocks.9.resid_post SAE"),
        ):
            meta = {**base, "hook_name": hook, "tokens": tokens}
            saes = [sae_for(meta, d_in, 16 * d_in, 32, 0)]
            clip = load_clip(saes, ModelChoice(device=a.device))
            batch = torch.stack([clip.preprocess(data.image(i)) for i in range(min(a.n, a.batch_size))])
            if hook == "embed":
                t0 = time.perf_counter()
                for start in range(0, a.n, a.batch_size):
                    clip.encode(batch[: min(a.batch_size, a.n - start)])
                rows.append(("bare forward (encode_image, preprocessed)", a.n / (time.perf_counter() - t0)))
            for n_saes in (1, 3):
                group = [sae_for(meta, d_in, 16 * d_in, 32, s) for s in range(n_saes)]
                for s in group:
                    s.sae.to(clip.device)
                t0 = time.perf_counter()
                zeroshot(clip, group, data, data.classnames, templates, batch_size=a.batch_size)
                rows.append(
                    (
                        f"zero-shot, {label} × {n_saes} (incl. 10×18 prompts, preprocessing)",
                        a.n / (time.perf_counter() - t0),
                    )
                )
            img = clip.preprocess(data.image(0))[None].to(clip.device)
            text = clip.text_embedding("a photo of a cat")
            with torch.enable_grad():
                t0 = time.perf_counter()
                for _ in range(3):
                    compare(clip, saes[0].sae, img, text, scale_latents([0], 0.0))
                rows.append(
                    (
                        f"heat-map comparison (2 backward passes), {label} — ms each",
                        1000 * (time.perf_counter() - t0) / 3,
                    )
                )
    print(f"\n{a.model}, random weights, {a.n} images, batch {a.batch_size}, device {a.device}\n")
    print("| run | images/s (or ms) |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")


if __name__ == "__main__":
    main()
