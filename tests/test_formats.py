"""The normative format pages must match the code (so the spec cannot drift): every field
table's names and types against what is written, every array's dtype and shape against the
page's tree, and the atlas's declared array list (`ATLAS_ARRAYS`) against both."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import write_images, write_tiny_clip_config
from precompute.activations import EmbedConfig, run_embed
from precompute.encoders import EncoderSpec
from sae_core.config import SAEConfig
from sae_core.io import cfg_json

REPO = Path(__file__).resolve().parents[1]
JSON_TYPES = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "dict": dict,
    "list": list,
    "null": type(None),
}


def table(doc: Path, heading: str) -> dict[str, str]:
    """The table under `## heading`: first-column name -> second column (its type or shape)."""
    text = doc.read_text()
    assert f"## {heading}" in text, f"no '## {heading}' in {doc}"
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", section, flags=re.M)
    assert rows, f"no table under '## {heading}' in {doc}"
    return {name: kind.strip() for name, kind in rows}


def table_fields(doc: Path, heading: str) -> dict[str, bool]:
    """The table under `## heading`: first-column name -> whether marked optional."""
    return {name: "optional" in kind for name, kind in table(doc, heading).items()}


def type_ok(value, spec: str) -> bool:
    """Does a JSON value have the documented type (`int`, `str or null`, `list[int]`, …)?"""
    for alt in spec.replace("(optional)", "").replace(", optional", "").split(" or "):
        alt = alt.strip()
        inner = re.fullmatch(r"list\[(\w+)\]", alt)
        if inner:
            if isinstance(value, list) and all(type_ok(v, inner.group(1)) for v in value):
                return True
        elif isinstance(value, JSON_TYPES[alt]) and not (alt in ("int", "float") and isinstance(value, bool)):
            return True
    return False


def check_fields(doc: Path, heading: str, written: dict, exact: bool = True) -> None:
    """Names both ways (optional ones may be absent) and the type of every value written."""
    spec = table(doc, heading)
    required = {k for k, t in spec.items() if "optional" not in t}
    assert required <= written.keys(), f"{heading}: documented but not written: {required - written.keys()}"
    if exact:
        assert written.keys() <= spec.keys(), f"{heading}: written but not documented: {written.keys() - spec.keys()}"
    for name, value in written.items():
        if name in spec:
            assert type_ok(value, spec[name]), f"{heading}.{name} = {value!r} is not {spec[name]}"


def tree_arrays(doc: Path) -> dict[str, tuple[tuple[str, ...], str]]:
    """Array lines of the page's tree: file name -> (symbolic shape, dtype)."""
    found = re.findall(r"^\s+(\S+\.npy)\s+\[([^\]]*)\]\s+(\w+)", doc.read_text(), flags=re.M)
    return {name: (tuple(d.strip() for d in shape.split(",")), dtype) for name, shape, dtype in found}


def tree_names(doc: Path) -> list[str]:
    """The first word of every line of the page's tree (paths, `<...>` placeholders)."""
    block = doc.read_text().split("```", 2)[1]
    return [line.split()[0] for line in block.splitlines()[2:] if line.strip()]


def tree_patterns(doc: Path) -> list[re.Pattern]:
    """Every path of the page's tree as a pattern, `<...>` matching one path component."""
    return [re.compile("^" + re.sub(r"<[^>]+>", "[^/]+", re.escape(n)) + "$") for n in tree_names(doc)]


def concrete(shape: tuple[str, ...], dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(int(d) if d.isdigit() else dims[d] for d in shape)


def test_cache_files_match_format_page(tmp_path):
    write_images(tmp_path / "imgs", 5)
    spec = EncoderSpec(model=write_tiny_clip_config(tmp_path), pretrained="none", patch_tokens=True)
    meta = run_embed(
        EmbedConfig(images=str(tmp_path / "imgs"), out=str(tmp_path / "c"), encoder=spec, workers=0, shard_size=3)
    )
    doc = REPO / "precompute/FORMAT.md"
    check_fields(doc, "metadata.json", meta)
    check_fields(doc, "settings.json", json.loads((tmp_path / "c/settings.json").read_text()))
    check_fields(doc, "encoder.json", json.loads((tmp_path / "c/encoder.json").read_text()))
    arrays = tree_arrays(doc)
    assert set(arrays) == {"acts_000000.npy", "patches_000000.npy"}
    for shard in meta["shards"]:
        dims = {"rows": shard["rows"], "images": shard["images"], "dim": meta["dim"], "n_patches": meta["n_patches"]}
        for key, doc_name in (("file", "acts_000000.npy"), ("patches", "patches_000000.npy")):
            a = np.load(tmp_path / "c" / shard[key])
            shape, dtype = arrays[doc_name]
            assert a.shape == concrete(shape, dims) and a.dtype == np.dtype(dtype) == np.dtype(meta["dtype"])
    written = {p.name.split("_")[0] for p in (tmp_path / "c/shards").iterdir()}
    assert written == {"acts", "patches", "images", "failures", "shard"}
    names = set(tree_names(doc))
    for p in (tmp_path / "c").rglob("*"):
        if p.is_file():  # shard files by their first shard's name
            assert re.sub(r"\d{6}", "000000", p.name) in names, f"{p.name} is written but not in the tree"


def test_sae_cfg_matches_format_page():
    doc = REPO / "sae_core/FORMAT.md"
    spec = table(doc, "cfg.json")
    bare = cfg_json(SAEConfig(d_in=4, d_sae=8, architecture="topk", k=2))
    full = cfg_json(SAEConfig(d_in=4, d_sae=8, metadata={"model_name": "ViT-B-32", "hook_name": "embed"}))
    check_fields(doc, "cfg.json", bare)
    check_fields(doc, "cfg.json", full)
    assert set(full) == set(spec), f"doc vs cfg.json: {set(spec) ^ set(full)}"
    assert None not in (full["model_name"], full["hook_name"]) and "hook_name" not in bare
    assert {f.name for f in dataclasses.fields(SAEConfig)} <= set(spec)


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_sae_tensors_match_format_page(tmp_path, arch):
    from safetensors import safe_open

    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    doc = table(REPO / "sae_core/FORMAT.md", "Tensors")
    cfg = SAEConfig(d_in=4, d_sae=8, architecture=arch)
    save_sae(SparseAutoencoder(cfg), tmp_path / "s")
    written = json.loads((tmp_path / "s/cfg.json").read_text())
    dims = {"d_in": 4, "d_sae": 8}
    with safe_open(str(tmp_path / "s/sae_weights.safetensors"), "pt") as fh:
        keys = set(fh.keys())
        for key in keys:
            t = fh.get_tensor(key)
            shape = tuple(d.strip() for d in doc[key].strip("[]").split(","))
            assert tuple(t.shape) == concrete(shape, dims), f"{key}: {tuple(t.shape)} vs {doc[key]}"
            assert str(t.dtype).removeprefix("torch.") == written["dtype"]
    assert keys <= set(doc) and (keys == set(doc)) == (arch == "jumprelu")
    assert written["format_version"] == 2


@pytest.fixture(scope="module")
def linked_atlases(tmp_path_factory):
    """A tiny CLIP atlas with every part (images, encoder, masks, labels) and a second SAE's atlas of
    the same cache (no masks, no labels)."""
    import torch

    from helpers import build_tiny_clip_atlas
    from precompute.atlas import AtlasConfig, build_atlas
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    d = tmp_path_factory.mktemp("formats")
    build_tiny_clip_atlas(d, labels=True)
    save_sae(SparseAutoencoder(SAEConfig(d_in=16, d_sae=7), generator=torch.Generator().manual_seed(1)), d / "ks")
    build_atlas(
        AtlasConfig(
            acts=str(d / "cache"), sae=str(d / "ks"), out=str(d / "katlas"), top_images=3, masks=False, labels=False
        )
    )
    return d


def test_atlas_matches_format_page(linked_atlases):
    from precompute.atlas_format import ATLAS_ARRAYS
    from precompute.atlas_scores import SCORE_ARRAYS

    doc = REPO / "precompute/ATLAS.md"
    arrays = tree_arrays(doc)
    declared = {f.name: (f.shape, f.dtype) for f in ATLAS_ARRAYS}
    assert {k: v for k, v in arrays.items() if not k.startswith(("links/", "scores/"))} == declared
    # the per-latent scores `clipsae eval card --atlas` adds later (tests/test_card.py writes them)
    assert {k: v for k, v in arrays.items() if k.startswith("scores/")} == {
        f.name: (f.shape, f.dtype) for f in SCORE_ARRAYS
    }
    atlas = linked_atlases / "atlas"
    m = json.loads((atlas / "manifest.json").read_text())
    check_fields(doc, "manifest.json", m)
    assert m["masks"] and m["labels"] and m["encoder"] and m["has_images"] and m["image_index"] and m["neighbours"]
    check_fields(doc, "encoder.json", json.loads((atlas / "encoder.json").read_text()))
    dims = {
        "F": m["d_sae"],
        "k": m["top_images"],
        "P": m["n_patches"],
        "N+1": m["n_images"] + 1,
        "nnz": m["n_codes"],
        "K": m["neighbours"],
    }
    for name, (shape, dtype) in declared.items():
        a = np.load(atlas / name, allow_pickle=False)
        assert a.shape == concrete(shape, dims) and a.dtype == np.dtype(dtype), f"{name}: {a.dtype} {a.shape}"
    written = {str(p.relative_to(atlas)) for p in atlas.rglob("*") if p.is_file()}
    assert set(m["files"]) == written - {"manifest.json", "sae/cfg.json", "sae/sae_weights.safetensors"}


def test_every_written_file_is_in_the_tree(linked_atlases):
    from precompute.link import link

    doc = REPO / "precompute/ATLAS.md"
    link(linked_atlases / "atlas", linked_atlases / "katlas", top=2)
    patterns = tree_patterns(doc)
    arrays = tree_arrays(doc)
    for atlas in (linked_atlases / "atlas", linked_atlases / "katlas"):
        m = json.loads((atlas / "manifest.json").read_text())
        for p in atlas.rglob("*"):
            if p.is_file():
                rel = str(p.relative_to(atlas))
                assert any(pat.match(rel) for pat in patterns), f"{rel} is written but not in the tree"
        for p in (atlas / "links").glob("*.npy"):
            shape, dtype = arrays["links/<sha256>." + p.name.split(".", 1)[1]]
            a = np.load(p)
            assert a.shape == concrete(shape, {"F": m["d_sae"], "top": 2}) and a.dtype == np.dtype(dtype)
        meta = json.loads(next((atlas / "links").glob("*.json")).read_text())
        assert (atlas / "links" / f"{meta['other_sae_sha256']}.json").is_file()
