"""What the app tests serve: a tiny CLIP atlas of real image files, a steering atlas of the
same images embedded by the tiny Kandinsky prior's own image encoder, the link between the
two, and the app launched in-process on 127.0.0.1 (tiny Kandinsky on the CPU)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from app.handlers import Handlers

K_LATENTS = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_app_data(d: Path) -> tuple[Path, Path]:
    """(CLIP atlas, steering atlas) over the same 12 images, linked both ways."""
    from app.kandinsky import make_tiny_pipelines
    from helpers import build_tiny_clip_atlas
    from precompute.activations import EmbedConfig, run_embed
    from precompute.atlas import AtlasConfig, build_atlas
    from precompute.encoders import EncoderSpec
    from precompute.link import link
    from sae_core.config import SAEConfig
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    atlas = build_tiny_clip_atlas(d, n_images=12)
    tiny = make_tiny_pipelines(seed=0)  # the same components the app steers with
    tiny.prior.image_encoder.save_pretrained(d / "prior" / "image_encoder")
    tiny.prior.image_processor.save_pretrained(d / "prior" / "image_processor")
    run_embed(
        EmbedConfig(
            images=str(d / "imgs"),
            out=str(d / "kcache"),
            encoder=EncoderSpec(model=str(d / "prior"), pretrained="none"),
            workers=0,
        )
    )
    ksae = SparseAutoencoder(
        SAEConfig(d_in=tiny.embed_dim, d_sae=K_LATENTS), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        ksae.b_enc.fill_(0.05)  # plenty of active latents
        ksae.b_enc[K_LATENTS - 1] = -100.0  # and one that never fires
    save_sae(ksae, d / "ksae")
    katlas = d / "katlas"
    build_atlas(AtlasConfig(acts=str(d / "kcache"), sae=str(d / "ksae"), out=str(katlas), top_images=4, labels=False))
    link(atlas, katlas, device="cpu")
    return atlas, katlas


@dataclass
class Served:
    """A running app: its URL, port, handlers, Blocks and data folder."""

    url: str
    port: int
    handlers: Handlers
    demo: object
    folder: Path


def serve_app(d: Path, built: bool = False) -> Served:
    """Launch the app on a free port over the data in `d` (built there first unless `built`);
    close with served.demo.close(). The suite shares one: conftest's session `served_app`."""
    from app.server import launch, make_handlers
    from app.ui import build_ui

    atlas, katlas = (d / "atlas", d / "katlas") if built else build_app_data(d)
    handlers, banner = make_handlers(atlas, katlas, tiny_kandinsky=True, device="cpu")
    demo = build_ui(handlers, banner)
    port = free_port()
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True)
    return Served(f"http://127.0.0.1:{port}/", port, handlers, demo, d)
