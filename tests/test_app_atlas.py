"""The app's read-only atlas: pages match the arrays; bad ids, manifests and paths are refused."""

import json

import numpy as np
import pytest

from app.atlas import Atlas
from helpers import build_tiny_clip_atlas


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("appatlas")
    build_tiny_clip_atlas(d)
    return d


def test_page_matches_the_arrays(built):
    atlas = Atlas(built / "atlas")
    s = int(np.argmax(np.load(built / "atlas/frequency.npy")))
    page = atlas.page(str(s))
    ids = np.load(built / "atlas/topk_ids.npy")[s]
    assert [t["image"] for t in page.top] == [int(i) for i in ids if i >= 0]
    assert page.frequency == pytest.approx(float(np.load(built / "atlas/frequency.npy")[s]))
    assert len(page.top[0]["mask"]) == 16 and page.mask_scale > 0
    assert atlas.image_path(page.top[0]["image"]).is_file()
    assert sum(page.histogram) > 0 and len(page.bands) == 5
    assert all(n != s for n, _ in page.neighbours)
    assert atlas.ranked("frequency", n=1) == [s]


@pytest.mark.parametrize("bad", ["-1", "24", "abc", "3.5", "", "nan", "1e9"])
def test_bad_latent_ids_are_refused(built, bad):
    with pytest.raises(ValueError, match="whole number from 0 to 23"):
        Atlas(built / "atlas").page(bad)


def test_missing_or_mismatched_manifest_is_refused(built, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        Atlas(tmp_path)
    import shutil

    copy = tmp_path / "atlas"
    shutil.copytree(built / "atlas", copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="format_version 99"):
        Atlas(copy)
    m["format_version"] = 1  # an atlas from before the value-band rename: rebuild, said plainly
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="format_version 1, older .* rebuild it with the same `clipsae atlas`"):
        Atlas(copy)
    m["format_version"] = 2  # before atlases were self-contained: rebuild, said plainly
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="format_version 2, older .* self-contained"):
        Atlas(copy)
    m["format_version"] = 3
    m["sae_sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="does not match"):
        Atlas(copy)


def test_image_paths_cannot_escape_the_images_root(built, tmp_path):
    import shutil

    copy = tmp_path / "atlas"
    shutil.copytree(built / "atlas", copy)
    secret = built / "secret.png"
    secret.write_bytes(b"x")
    lines = (copy / "images.jsonl").read_text().splitlines()
    lines[0] = json.dumps({"id": "x", "path": "../secret.png"})
    (copy / "images.jsonl").write_text("\n".join(lines) + "\n")
    atlas = Atlas(copy)
    assert atlas.image_path(0) is None and atlas.image_path(1) is not None
    assert atlas.image_path(-1) is None and atlas.image_path(10**6) is None


def test_neighbour_table_equals_a_full_search(built, tmp_path):
    """The stored nearest latents are the exact cosine ranking of the decoder directions, and an
    atlas built without the table (--neighbours 0) finds the same by searching latents.faiss."""
    from precompute.atlas import AtlasConfig, build_atlas
    from sae_core.io import load_sae

    atlas = Atlas(built / "atlas")
    w = load_sae(built / "sae").W_dec.detach().double().numpy()
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    cos = w @ w.T
    np.fill_diagonal(cos, -np.inf)
    want = np.argsort(-cos, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(atlas.neighbour_ids, want)
    np.testing.assert_allclose(atlas.neighbour_cos, np.take_along_axis(cos, want, 1), atol=1e-6)
    build_atlas(
        AtlasConfig(
            acts=str(built / "cache"),
            sae=str(built / "sae"),
            out=str(tmp_path / "a"),
            top_images=4,
            labels=False,
            masks=False,
            neighbours=0,
        )
    )
    plain = Atlas(tmp_path / "a")
    assert plain.neighbour_ids is None and not (tmp_path / "a/neighbour_ids.npy").exists()
    for s in (0, 5, 23):
        assert [i for i, _ in plain.neighbours(s)] == [i for i, _ in atlas.neighbours(s)] == list(want[s])


def test_a_changed_sae_copy_is_refused_even_after_a_verified_open(built, tmp_path):
    import shutil

    copy = tmp_path / "atlas"
    shutil.copytree(built / "atlas", copy)
    Atlas(copy)  # verified (and remembered)
    Atlas(copy)  # the remembered match: no hash
    weights = copy / "sae" / "sae_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the manifest's SAE hash"):
        Atlas(copy)
