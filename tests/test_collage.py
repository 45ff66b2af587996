"""`clipsae collage`: one PNG per latent with its top images, masks and caption strip; the
same image offered by the app on each latent page."""

import numpy as np
import pytest
from PIL import Image

from app.atlas import Atlas
from app.collage import GAP, MARGIN, CollageConfig, _strip_lines, collage_main, render_collage
from app.render import open_thumb
from helpers import build_tiny_clip_atlas


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory):
    return build_tiny_clip_atlas(tmp_path_factory.mktemp("collage"), n_images=10, d_sae=24, k=6)


def _tile(im: Image.Image, slot: int, strip_h: int, columns: int = 4, tile: int = 224) -> np.ndarray:
    r, c = divmod(slot, columns)
    x0, y0 = MARGIN + c * (tile + GAP), strip_h + r * (tile + 22 + GAP)
    return np.asarray(im.crop((x0, y0, x0 + tile, y0 + tile))).astype(np.int16)


def _strip_height(plain: Image.Image, n_top: int, columns: int = 4, tile: int = 224) -> int:
    rows = -(-n_top // columns)
    return plain.height - MARGIN - rows * (tile + 22 + GAP)


def test_grid_holds_each_top_image_with_and_without_its_mask(atlas_dir):
    atlas = Atlas(atlas_dir)
    s = int(np.argmax(atlas.frequency))
    page = atlas.page(s)
    plain = render_collage(atlas, s, masks=False)
    tinted = render_collage(atlas, s, masks=True)
    assert plain.size == tinted.size and plain.width == 2 * MARGIN + 4 * 224 + 3 * GAP
    strip_h = _strip_height(plain, len(page.top))
    for slot, t in enumerate(page.top):
        thumb = np.asarray(open_thumb(atlas.image_path(t["image"]), 224)).astype(np.int16)
        assert np.array_equal(_tile(plain, slot, strip_h), thumb)  # --no-masks: the image itself
        mask = np.asarray(t["mask"]).reshape(4, 4)
        if mask.max() > 0:  # the tint reddens the active patches
            red = _tile(tinted, slot, strip_h)[..., 0] - thumb[..., 0]
            r, c = np.unravel_index(np.argmax(mask), mask.shape)
            assert red[r * 56 : (r + 1) * 56, c * 56 : (c + 1) * 56].mean() > 0


def test_caption_strip_says_frequency_label_interpretation_and_random_weights(atlas_dir):
    atlas = Atlas(atlas_dir)
    s = int(np.argmax(atlas.frequency))
    text = " ".join(t for t, _, _ in _strip_lines(atlas, s))
    n = atlas.manifest["n_images"]
    assert f"Latent {s}" in text and f"fires on {float(atlas.frequency[s]):.2%} of {n} images" in text
    assert "RANDOM weights" in text  # the tiny CLIP has random weights
    dead = [i for i in range(atlas.n_latents) if atlas.frequency[i] == 0]
    if dead:
        assert "dead" in " ".join(t for t, _, _ in _strip_lines(atlas, dead[0]))
        assert render_collage(atlas, dead[0]).height < 300  # no empty grid


def test_cli_writes_one_png_per_latent(atlas_dir, tmp_path, capsys):
    from app.cli import main

    assert main(["collage", str(atlas_dir), "--latents", "3,7", "--out", str(tmp_path / "a")]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["latent_3.png", "latent_7.png"]
    freq = np.load(atlas_dir / "frequency.npy")
    paths = collage_main(CollageConfig(atlas=str(atlas_dir), out=str(tmp_path / "b"), top=2))
    assert [p.name for p in paths] == [f"latent_{i}.png" for i in np.argsort(-freq, kind="stable")[:2]]
    assert [
        p.name for p in collage_main(CollageConfig(atlas=str(atlas_dir), out=str(tmp_path / "c"), latents="2"))
    ] == [p.name for p in paths]
    im = Image.open(paths[0])
    assert im.mode == "RGB" and im.width >= 900  # a readable size
    assert main(["collage", str(atlas_dir), "--out", str(tmp_path / "d")]) == 2
    assert "--latents" in capsys.readouterr().err
    assert main(["collage", str(atlas_dir), "--latents", "99,", "--out", str(tmp_path / "d")]) == 2
    assert "out of range" in capsys.readouterr().err


def test_the_app_offers_the_same_collage(atlas_dir, tmp_path):
    from app.render import RenderCache
    from app.server import make_handlers

    handlers, _ = make_handlers(atlas_dir, device="cpu")
    handlers.render = RenderCache(handlers.atlas, root=tmp_path)
    handlers.browsable[handlers.atlas.name] = (handlers.atlas, handlers.render)
    path = handlers.collage(4)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(render_collage(handlers.atlas, 4)))
    mtime = (tmp_path / path).stat().st_mtime_ns
    assert handlers.collage("4") == path and (tmp_path / path).stat().st_mtime_ns == mtime  # rendered once
    with pytest.raises(ValueError, match="whole number"):
        handlers.collage(999)
