"""Feature icons for steering latents (after Gytis Daujotas' Kandinsky playground), no gradio.

An icon is what the decoder makes of one latent alone: the neutral base embedding (the
prior's embedding of an all-zero image, also the negative) with the latent set to its
highest activation over the atlas's images (× `strength`), decoded with a fixed seed.

Precomputed icons live in `KATLAS/icons/` (`clipsae icons KATLAS`, e.g. on a GPU at
512 px; see app/ICONS.md); the app uses them when their SAE hash matches the atlas, and
otherwise makes an icon on demand (64 px on a CPU) into its render cache.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from precompute.selection import most_frequent_first, parse_latents
from sae_core.edit import Edit
from sae_core.files import atomic_write_text, atomic_write_with, check_format
from sae_core.progress import Progress

from .atlas import Atlas
from .configs import IconsConfig, KandinskyOptions
from .jobs import Job
from .steer import Steerer, steer_embedding

log = logging.getLogger(__name__)
ICONS_DIR = "icons"
ICONS_FORMAT = "clipsae-icons"
ICONS_VERSION = 1


@dataclass(frozen=True)
class IconSpec:
    """How icons are decoded."""

    size: int = 64
    """Resolution in pixels (64 on a CPU; 512 with the real decoder on a GPU)."""
    steps: int = 12
    """Decoder steps (Gytis used 12)."""
    seed: int = 0
    """Noise seed (the same for every latent, so icons differ only by their latent)."""
    strength: float = 1.0
    """The latent is set to strength × its highest activation over the atlas's images."""


def icon_value(atlas: Atlas, latent: int, strength: float = 1.0) -> float:
    """The activation an icon sets its latent to; a ValueError for a latent that never fires."""
    top = float(atlas.max_activation[latent])
    if top <= 0:
        raise ValueError(f"latent {latent} never fires on this atlas's images, so it has no icon")
    return strength * top


@torch.no_grad()
def make_icon(steerer: Steerer, atlas: Atlas, latent: int, spec: IconSpec, job: Job | None = None) -> Image.Image:
    """Decode the neutral base embedding with `latent` set to its icon value."""
    value = icon_value(atlas, latent, spec.strength)
    base = steerer.neutral_embedding()
    x = steer_embedding(steerer.sae, base.to(steerer.device), [Edit(int(latent), "set", value)]).to(base.dtype)
    return steerer.decode(x, base, spec.seed, spec.steps, spec.size, job, label=f"icon of latent {latent}")


def read_icons_header(folder: Path) -> dict | None:
    """The checked icons.json of a precomputed icon folder, or None if there is none."""
    path = folder / "icons.json"
    if not path.is_file():
        return None
    return check_format(json.loads(path.read_text()), ICONS_FORMAT, ICONS_VERSION, path, "icon folder")


class IconStore:
    """Icons of one steering atlas: precomputed ones first, then made on demand and cached."""

    def __init__(self, atlas: Atlas, steerer: Steerer, cache_root: Path, spec: IconSpec):
        self.atlas, self.steerer, self.spec = atlas, steerer, spec
        self.cache = Path(cache_root) / f"icons_{spec.size}px_{spec.steps}steps_{spec.seed}_{spec.strength:g}"
        self.cache.mkdir(parents=True, exist_ok=True)
        self.precomputed: Path | None = None
        try:
            header = read_icons_header(atlas.path / ICONS_DIR)
        except ValueError as exc:
            log.warning("ignoring precomputed icons: %s", exc)
            header = None
        if header is not None:
            if header.get("sae_sha256") == atlas.manifest["sae_sha256"]:
                self.precomputed = atlas.path / ICONS_DIR
                self.header = header
            else:
                log.warning("ignoring %s/%s: made for another SAE", atlas.path, ICONS_DIR)

    def lookup(self, latent: int) -> Path | None:
        """An existing icon file of the latent (precomputed or cached), else None."""
        for folder in (self.precomputed, self.cache):
            if folder is not None and (folder / f"{latent}.png").is_file():
                return folder / f"{latent}.png"
        return None

    def get(self, latent: int, job: Job | None = None) -> Path:
        """The icon of the latent, made (and cached) if needed."""
        found = self.lookup(latent)
        if found is not None:
            return found
        image = make_icon(self.steerer, self.atlas, latent, self.spec, job)
        return atomic_write_with(self.cache / f"{latent}.png", lambda tmp: image.save(tmp, "PNG"))


def write_icons(
    atlas: Atlas, steerer: Steerer, spec: IconSpec, latents: list[int] | None = None, decoder_name: str = ""
) -> int:
    """`clipsae icons`: icons of the given (default: every live) latent into ATLAS/icons/.
    Existing icons of the same spec are kept (a re-run continues). Returns how many were made."""
    folder = atlas.path / ICONS_DIR
    folder.mkdir(exist_ok=True)
    header = {
        "format": ICONS_FORMAT,
        "format_version": ICONS_VERSION,
        "sae_sha256": atlas.manifest["sae_sha256"],
        "decoder": decoder_name,
        "tiny": bool(steerer.pipes.tiny),
        **asdict(spec),
    }
    old = read_icons_header(folder)
    if old is not None and {k: old.get(k) for k in header} != header:
        for stale in folder.glob("*.png"):  # another SAE or spec: start over
            stale.unlink()
    atomic_write_text(folder / "icons.json", json.dumps(header, indent=2))
    todo = latents if latents is not None else [int(i) for i in range(atlas.n_latents) if atlas.max_activation[i] > 0]
    todo = [j for j in todo if not (folder / f"{j}.png").is_file()]
    bar = Progress(len(todo), "icons", unit="icon", logger=log)
    for j in todo:
        image = make_icon(steerer, atlas, atlas.check_latent(j), spec)
        atomic_write_with(folder / f"{j}.png", lambda tmp, im=image: im.save(tmp, "PNG"))
        bar.update()
    bar.close()
    return len(todo)


def icons_main(cfg: IconsConfig, options: KandinskyOptions | None = None) -> str:
    """`clipsae icons KATLAS`: write the icons of the chosen latents (default: every latent that
    fires) into KATLAS/icons/; returns the line saying what was written."""
    from sae_core.device import resolve_device
    from sae_core.io import load_sae

    from .kandinsky import pipelines_for

    dev = str(resolve_device(cfg.device))
    atlas = Atlas(cfg.katlas)
    chosen = parse_latents(cfg.latents)
    latents = (
        None
        if chosen.count is None and chosen.ids is None
        else chosen.resolve(atlas.n_latents, most_frequent_first(atlas.frequency))
    )
    pipes = pipelines_for(cfg.prior, cfg.decoder, tiny=cfg.tiny_kandinsky, device=dev, options=options)
    steerer = Steerer(pipes, load_sae(atlas.path / "sae", device=dev), device=dev)
    spec = IconSpec(size=cfg.size, steps=cfg.steps, seed=cfg.seed, strength=cfg.strength)
    n = write_icons(atlas, steerer, spec, latents, decoder_name="tiny" if cfg.tiny_kandinsky else cfg.decoder)
    return f"{n} icon(s) written to {atlas.path / 'icons'} ({spec.size} px, {spec.steps} steps)"
