"""An atlas is self-contained: built, then moved (with its images) where the build's cache,
SAE and model config no longer exist, it still serves real thumbnails, Inspect and links —
through `serve --images-root`, through a layout that keeps the images beside the atlas, and
through `clipsae up` on a data folder laid out as the README's Docker recipe mounts it.
Render caches cannot go stale across an in-place rebuild."""

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.atlas import Atlas
from helpers import write_images, write_tiny_clip_config, write_tiny_kandinsky_prior
from precompute.activations import EmbedConfig, run_embed
from precompute.atlas import AtlasConfig, build_atlas
from precompute.encoders import EncoderSpec
from precompute.link import link
from sae_core.config import SAEConfig
from sae_core.io import save_sae
from sae_core.sae import SparseAutoencoder


def real_picture(path: str | Path) -> bool:
    """A rendered thumbnail of one of the random test images, not the grey placeholder."""
    return float(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).std()) > 30


def _sae(d_in: int, d_sae: int, seed: int, folder: Path) -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=d_sae), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.fill_(0.02)
    save_sae(sae, folder)


@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    """Built under build/, then moved to mnt/data/{atlas,katlas,images}; build/ is deleted."""
    root = tmp_path_factory.mktemp("reloc")
    b = root / "build"
    write_images(b / "imgs", 12, seed=9)
    clip = EncoderSpec(model=write_tiny_clip_config(b), pretrained="none", patch_tokens=True)
    run_embed(EmbedConfig(images=str(b / "imgs"), out=str(b / "cache"), encoder=clip, workers=0))
    kmeta = run_embed(
        EmbedConfig(
            images=str(b / "imgs"),
            out=str(b / "kcache"),
            workers=0,
            encoder=EncoderSpec(model=write_tiny_kandinsky_prior(b / "prior"), pretrained="none"),
        )
    )
    _sae(16, 24, 0, b / "sae")
    _sae(kmeta["dim"], 20, 1, b / "ksae")
    build_atlas(
        AtlasConfig(acts=str(b / "cache"), sae=str(b / "sae"), out=str(b / "atlas"), top_images=4, labels=False)
    )
    build_atlas(AtlasConfig(acts=str(b / "kcache"), sae=str(b / "ksae"), out=str(b / "katlas"), top_images=4))
    link(b / "atlas", b / "katlas", top=3)
    data = root / "mnt" / "data"
    data.mkdir(parents=True)
    for src, dst in (("atlas", "atlas"), ("katlas", "katlas"), ("imgs", "images")):
        shutil.move(str(b / src), str(data / dst))
    shutil.rmtree(b)  # the cache, the SAE folders, the model config and the prior are gone
    return data


def test_served_with_images_root_after_a_move(mounted):
    from app.server import make_handlers

    handlers, banner = make_handlers(
        mounted / "atlas", mounted / "katlas", device="cpu", images_root=mounted / "images"
    )
    assert "Inspect is unavailable" not in banner and "were not found" not in banner
    atlas = handlers.atlas
    alive = [s for s in range(atlas.n_latents) if atlas.frequency[s] > 0]
    assert alive
    for s in alive:
        header, gallery, _, bands, data = handlers.latent_page(s)
        assert gallery and all(real_picture(path) for path, _ in gallery)  # every top image, as a real thumbnail
        # every value-band image as a real thumbnail (empty band places are blank tiles)
        assert sum(real_picture(path) for path, _ in bands) == sum(len(b) for b in data["bands"]) > 0
    assert any(handlers.linked_choices(s) for s in alive)  # links found by SAE hash after the move
    image = Image.open(next(mounted.joinpath("images").rglob("*.png")))
    md, heat, examples, near, found = handlers.inspect(image)
    assert found["top"] and heat is not None and near and all(real_picture(p) for p, _ in near + examples)
    # the steering atlas is browsable too, with its own images
    _, kgallery, *_ = handlers.latent_page(int(np.argmax(handlers.steer_atlas.frequency)), "katlas")
    assert kgallery and all(real_picture(p) for p, _ in kgallery)


def test_moved_together_with_its_images_needs_no_flag(mounted, tmp_path):
    """An atlas and its images moved together, keeping their relative place (../imgs at build)."""
    shutil.copytree(mounted / "atlas", tmp_path / "x" / "atlas")
    shutil.copytree(mounted / "images", tmp_path / "x" / "imgs")
    atlas = Atlas(tmp_path / "x" / "atlas")
    assert atlas.images_root.resolve() == (tmp_path / "x" / "imgs").resolve()
    assert atlas.image_path(int(atlas.topk_ids[int(np.argmax(atlas.frequency)), 0])) is not None
    lost = Atlas(mounted / "atlas")  # neither ../imgs nor the build's absolute root exists
    assert lost.images_root is None and lost.image_path(0) is None
    with pytest.raises(FileNotFoundError, match="--images-root .* is not a folder"):
        Atlas(mounted / "atlas", images_root=tmp_path / "nowhere")


def test_up_serves_the_docker_layout(mounted, monkeypatch):
    """`clipsae up --data DATA` with DATA/atlas, DATA/katlas and DATA/images, as the container
    mounts them: the app starts, pages show real thumbnails and Inspect works."""
    import app.server
    from gradio_client import Client, handle_file

    from app.cli import main

    launched = []
    real_launch = app.server.launch

    def launch(demo, host, port, share=False, prevent_thread_lock=False, auth=None):
        launched.append(demo)
        return real_launch(demo, host, port, share=share, prevent_thread_lock=True, auth=auth)

    monkeypatch.setattr(app.server, "launch", launch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["up", "--data", str(mounted), "--port", str(port), "--device", "cpu"]) == 0
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        atlas = Atlas(mounted / "atlas")
        latent = int(np.argmax(atlas.frequency))
        header, gallery, _, bands, data = client.predict(latent, api_name="/latent_page")
        assert header.startswith(f"## Latent {latent}") and gallery
        assert all(real_picture(item["image"]) for item in gallery)
        image = next(mounted.joinpath("images").rglob("*.jpg"))
        md, heat, examples, near, found = client.predict(handle_file(str(image)), "", "", api_name="/inspect")
        assert found["top"] and near and all(real_picture(item["image"]) for item in near)
    finally:
        launched[0].close()


def test_an_in_place_rebuild_never_meets_old_renders(tmp_path):
    from app.render import RenderCache

    rng = np.random.default_rng(0)
    _sae(6, 10, 0, tmp_path / "sae")
    roots = []
    for seed in (1, 2, 1):
        np.save(
            tmp_path / "x.npy",
            rng.normal(size=(40, 6)).astype(np.float32)
            if seed != 1
            else np.random.default_rng(seed).normal(size=(40, 6)).astype(np.float32),
        )
        build_atlas(
            AtlasConfig(acts=str(tmp_path / "x.npy"), sae=str(tmp_path / "sae"), out=str(tmp_path / "a"), top_images=3)
        )
        roots.append(RenderCache(Atlas(tmp_path / "a"), root=tmp_path / "renders").root)
    assert roots[0] != roots[1], "same folder and SAE, other activations: another render cache"
    assert roots[0] == roots[2], "an identical rebuild keeps its renders (same content hash)"
    (tmp_path / "imgs").mkdir()
    other = RenderCache(Atlas(tmp_path / "a", images_root=tmp_path / "imgs"), root=tmp_path / "renders").root
    assert other != roots[2], "another images root: other thumbnails"
