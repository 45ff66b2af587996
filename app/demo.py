"""The embedded demo: real photos that ship inside scikit-image and scikit-learn, CLIP
activations, an SAE, its metrics and its atlas — built once into a cache folder, no
download needed.

    clipsae demo                      # build (first run), report, then serve the app on 127.0.0.1:7860
    clipsae demo --no-serve           # build and report only
    clipsae demo --rebuild            # start over

ViT-B-32 / laion2b_s34b_b79k is used when its weights are in the Hugging Face cache (or
downloadable); otherwise random weights, said plainly.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from precompute.activations import EmbedConfig, run_embed
from precompute.atlas import AtlasConfig, build_atlas
from precompute.captioner import TINY, captioner_source, load_captioner
from precompute.encoders import EncoderSpec
from precompute.hub_ids import BLIP_CAPTIONER, CLIP_MODEL, CLIP_PRETRAINED
from precompute.interpret import InterpretConfig, interpret
from precompute.link import link
from sae_core.config import SAEConfig, TrainConfig
from sae_core.evaluate import metrics_main
from sae_core.files import atomic_write_text
from sae_core.sweep import make_specs
from sae_core.train import train

from .atlas import Atlas
from .kandinsky import PRIOR_ID, kandinsky_available, make_tiny_pipelines

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "horse.png",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "ihc.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "page.png",
    "text.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "color.png",
    "logo.png",
    "cell.png",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
CROPS = {"tl": (0.0, 0.0), "tr": (0.4, 0.0), "bl": (0.0, 0.4), "br": (0.4, 0.4)}
"""Corner crops of 60% of each side (relative top-left corners)."""


def _package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (sklearn's import alone is ~2 s)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{name} is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_photos(limit: int | None = None) -> list[Path]:
    """Paths of the photos bundled in the installed scikit-image / scikit-learn wheels (the
    first `limit` of them when given)."""
    sk = _package_dir("skimage") / "data"
    sl = _package_dir("sklearn") / "datasets" / "images"
    found = [sk / n for n in SKIMAGE_PHOTOS if (sk / n).exists()] + [
        sl / n for n in SKLEARN_PHOTOS if (sl / n).exists()
    ]
    if not found:
        raise FileNotFoundError("no bundled photos found in scikit-image / scikit-learn; run `make setup`")
    return found[:limit]


def write_demo_images(dest: Path, photos: int | None = None) -> int:
    """Each photo (the first `photos` of them when given), its mirror image and four corner
    crops, as PNG files under `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in bundled_photos(photos):
        with Image.open(path) as im:
            im = im.convert("RGB")
        stem = path.stem
        variants = {"orig": im, "flip": ImageOps.mirror(im)}
        w, h = im.size
        for name, (fx, fy) in CROPS.items():
            x0, y0 = int(fx * w), int(fy * h)
            variants[name] = im.crop((x0, y0, x0 + int(0.6 * w), y0 + int(0.6 * h)))
        for name, v in variants.items():
            v.save(dest / f"{stem}_{name}.png", compress_level=1)  # lossless either way; ~8x faster to write
            n += 1
    return n


def _hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_clip_weights(model: str = CLIP_MODEL, tag: str = CLIP_PRETRAINED) -> str:
    """A local weights file from the HF cache, the tag itself when the hub is reachable, else `none`."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(model, tag)
    repo = (cfg.get("hf_hub") or "").strip("/")
    if repo:
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, filename)
            if isinstance(hit, str):
                return hit
    return tag if repo and _hub_reachable() else "none"


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def clip_cache(self) -> Path:
        return self.root / "clip_acts"

    @property
    def clip_sae(self) -> Path:
        return self.root / "clip_sae"

    @property
    def clip_atlas(self) -> Path:
        return self.root / "clip_atlas"

    @property
    def prior_encoder(self) -> Path:
        return self.root / "tiny_prior"

    @property
    def k_cache(self) -> Path:
        return self.root / "kandinsky_acts"

    @property
    def k_sae(self) -> Path:
        return self.root / "kandinsky_sae"

    @property
    def k_atlas(self) -> Path:
        return self.root / "kandinsky_atlas"

    @property
    def card(self) -> Path:
        return self.root / "card"

    @property
    def info(self) -> Path:
        return self.root / "demo.json"


PATH_KEYS = ("clip_cache", "clip_sae", "clip_atlas", "kandinsky_atlas", "kandinsky_cache", "card")
"""demo.json's folders: written relative to the demo folder, read back as paths inside it, so a
demo built from one working directory serves from any other (and from a moved folder)."""


def read_demo_info(root: str | Path) -> dict | None:
    """The built demo's demo.json with its folders resolved inside `root`; None if not built.
    (Demos built before this wrote the folders relative to the working directory: the last part
    of each path is the folder's name inside `root` either way.)"""
    path = DemoPaths(Path(root)).info
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return {**info, **{key: str(Path(root) / Path(info[key]).name) for key in PATH_KEYS if key in info}}


def _write_demo_info(root: Path, info: dict) -> None:
    atomic_write_text(
        DemoPaths(root).info,
        json.dumps({**info, **{key: Path(info[key]).name for key in PATH_KEYS if key in info}}, indent=2),
    )


def build_demo(
    root: str | Path = "demo_cache", rebuild: bool = False, device: str = "auto", photos: int | None = None
) -> dict:
    """Build (or reuse) the demo: images, ViT-B-32 `embed` activations with patch tokens, an SAE.
    `photos`: only the first that many bundled photos (6 images each; the suite builds a smaller
    demo this way), else all of them."""
    paths = DemoPaths(Path(root))
    if rebuild and paths.root.exists():
        shutil.rmtree(paths.root)
    info = read_demo_info(paths.root)
    if info is not None:
        if "captioner" not in info:  # a demo built before `clipsae interpret` existed
            info = interpret_demo(info, device)
            _write_demo_info(paths.root, info)
        if "card" not in info:  # a demo built before `clipsae eval card` existed
            info = card_demo({**info, "kandinsky_cache": str(paths.k_cache)}, paths.card, device)
            _write_demo_info(paths.root, info)
        return info
    n = write_demo_images(paths.images, photos)
    weights = resolve_clip_weights()
    random_weights = weights == "none"
    log.info(
        "demo: %d images; CLIP weights: %s",
        n,
        "RANDOM (no pretrained ViT-B-32 in the cache and no network)" if random_weights else weights,
    )
    spec = EncoderSpec(model=CLIP_MODEL, pretrained=weights, patch_tokens=True)
    meta = run_embed(
        EmbedConfig(
            images=str(paths.images),
            out=str(paths.clip_cache),
            encoder=spec,
            batch_size=32,
            workers=1,
            shard_size=256,
            device=device,
        )
    )
    sae_cfg = SAEConfig(d_in=meta["dim"], d_sae=1024, architecture="relu", normalize_activations="unit_norm")
    # Measured on the demo set (random weights): L0 ≈ 24 of 1024 at explained variance ≈ 0.99. Seed 001's
    # λ convention and the schedule these values were tuned with (`clipsae train` now picks its own).
    train_cfg = TrainConfig(
        batch_size=32,
        epochs=100,
        lr=3e-3,
        lr_warmup_steps=100,
        l1_warmup_steps=0,
        resample_every=2500,
        l1_convention="mean",
        checkpoint_every=0,
        device=device,
    )
    train(paths.clip_cache, paths.clip_sae, make_specs(sae_cfg, [1e-2], [None]), train_cfg, overwrite=True)
    # Labels need ~2k CLIP text embeddings (minutes on a CPU) and mean nothing with random weights.
    build_atlas(
        AtlasConfig(
            acts=str(paths.clip_cache),
            sae=str(paths.clip_sae),
            out=str(paths.clip_atlas),
            labels=not random_weights,
            device=device,
        )
    )
    # The steering side: the Kandinsky prior's own image encoder (the real one when cached, else
    # the tiny random one the app will steer with), a steering SAE on its embeddings, its atlas,
    # and the link that maps CLIP latents to steerable ones.
    real_kandinsky = kandinsky_available()
    if real_kandinsky:
        prior_model = PRIOR_ID
    else:
        tiny = make_tiny_pipelines(seed=0)
        tiny.prior.image_encoder.save_pretrained(paths.prior_encoder / "image_encoder")
        tiny.prior.image_processor.save_pretrained(paths.prior_encoder / "image_processor")
        prior_model = str(paths.prior_encoder)
    kmeta = run_embed(
        EmbedConfig(
            images=str(paths.images),
            out=str(paths.k_cache),
            encoder=EncoderSpec(model=prior_model, pretrained="none"),
            batch_size=32,
            workers=1,
            shard_size=256,
            device=device,
        )
    )
    ksae_cfg = SAEConfig(d_in=kmeta["dim"], d_sae=256, architecture="relu", normalize_activations="unit_norm")
    train(paths.k_cache, paths.k_sae, make_specs(ksae_cfg, [1e-2], [None]), train_cfg, overwrite=True)
    build_atlas(
        AtlasConfig(acts=str(paths.k_cache), sae=str(paths.k_sae), out=str(paths.k_atlas), labels=False, device=device)
    )
    link(paths.clip_atlas, paths.k_atlas)
    info = {
        "n_images": meta["n_images"],
        "clip_weights": weights,
        "random_weights": random_weights,
        "clip_cache": str(paths.clip_cache),
        "clip_sae": str(paths.clip_sae),
        "clip_atlas": str(paths.clip_atlas),
        "kandinsky": "real" if real_kandinsky else "tiny",
        "kandinsky_atlas": str(paths.k_atlas),
        "kandinsky_cache": str(paths.k_cache),
    }
    info = interpret_demo(info, device)
    info = card_demo(info, paths.card, device)
    _write_demo_info(paths.root, info)
    return info


def interpret_demo(info: dict, device: str = "auto") -> dict:
    """Seed 001's caption keywords for both demo atlases: the real BLIP when it is in the
    Hugging Face cache, else the tiny random one (said plainly in the app and the report)."""
    spec = BLIP_CAPTIONER if captioner_source(BLIP_CAPTIONER) else TINY
    captioner, captions = load_captioner(spec, device), {}
    for key in ("clip_atlas", "kandinsky_atlas"):  # the same images: each is captioned once
        interpret(InterpretConfig(atlas=info[key], captioner=spec, device=device), captioner, captions)
    return {**info, "captioner": spec, "captioner_description": captioner.description}


DEMO_MORAN_MIN_IMAGES = 10
"""The demo's 132 images are too few for ViSAEBench's 50 images per latent; its card says 10."""


def card_demo(info: dict, out: Path, device: str = "auto") -> dict:
    """The CLIP SAE's card (`clipsae eval card`), its scores into the CLIP atlas: MS under the
    Kandinsky prior's image encoder (another encoder, its cache of the same images), Moran's I
    from the patch tokens, label quality of the interpretations. The demo has no held-out set:
    the card is measured on the SAE's own training images, and says so in the report."""
    from evaluation.card import CardConfig, card_main

    card_main(
        CardConfig(
            sae=info["clip_sae"],
            acts=info["clip_cache"],
            atlas=info["clip_atlas"],
            evaluator=info["kandinsky_cache"],
            moran_min_images=DEMO_MORAN_MIN_IMAGES,
            out=str(out),
            device=device,
        )
    )
    return {**info, "card": str(out)}


def demo_main(root: str = "demo_cache", rebuild: bool = False, device: str = "auto") -> str:
    """Build the demo if needed and return its report (metrics table + atlas preview)."""
    info = build_demo(root, rebuild=rebuild, device=device)
    banner = (
        "CLIP ViT-B-32 with RANDOM weights (no pretrained weights in the cache and no network): "
        "features are not meaningful"
        if info["random_weights"]
        else f"CLIP ViT-B-32 weights: {info['clip_weights']}"
    )
    table = metrics_main(info["clip_cache"], info["clip_sae"], device=device)
    return (
        f"Demo: {info['n_images']} images bundled with scikit-image/scikit-learn.\n{banner}\n"
        f"Latent interpretations (clipsae interpret): {info['captioner_description']}\n\n{table}\n\n"
        f"{card_summary(info['card'])}\n\n{atlas_summary(info['clip_atlas'])}\n"
    )


def card_summary(card_dir: str | Path) -> str:
    """The demo card's table (card.md's), with where the card is."""
    from evaluation.card_io import read_card, summary_rows

    rows = summary_rows(read_card(card_dir))
    lines = [
        f"Card of the CLIP SAE (clipsae eval card, on its own training images; {card_dir}/card.md):",
        "| Metric | Value |",
        "|---|---|",
    ] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def atlas_summary(atlas: str | Path, n_latents: int = 5) -> str:
    """The most frequent latents of an atlas with their top images (a text preview of the app)."""
    a = Atlas(atlas)
    lines = [f"Atlas {atlas}: {a.n_latents} latents, {a.manifest['n_dead']} dead; most frequent latents:"]
    for lat in a.ranked("frequency", n_latents):
        page = a.page(lat)
        top = ", ".join(f"{t['path']} ({t['value']:.3g})" for t in page.top[:3])
        label = f" [{', '.join(page.label[:3])}]" if page.label else ""
        sentence = f"\n      {a.interpretation(lat)}" if a.interpretation(lat) else ""
        lines.append(f"  latent {lat}{label}: fires on {page.frequency:.0%} of images; top: {top}{sentence}")
    return "\n".join(lines)
