"""The normative format pages must match the code (so the spec cannot drift)."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from helpers import write_images, write_tiny_clip_config
from precompute.activations import EmbedConfig, run_embed
from precompute.encoders import EncoderSpec
from sae_core.config import SAEConfig
from sae_core.io import cfg_json

REPO = Path(__file__).resolve().parents[1]


def table_fields(doc: Path, heading: str) -> dict[str, bool]:
    """First-column names of the table under `heading` -> whether marked optional."""
    text = doc.read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", section, flags=re.M)
    assert rows, f"no table under '## {heading}' in {doc}"
    return {name: "optional" in kind for name, kind in rows}


def test_cache_metadata_matches_format_page(tmp_path):
    write_images(tmp_path / "imgs", 3)
    spec = EncoderSpec(model=write_tiny_clip_config(tmp_path), pretrained="none", patch_tokens=True)
    meta = run_embed(EmbedConfig(images=str(tmp_path / "imgs"), out=str(tmp_path / "c"), encoder=spec, workers=0))
    doc = table_fields(REPO / "precompute/FORMAT.md", "metadata.json")
    required = {k for k, optional in doc.items() if not optional}
    assert required <= meta.keys(), f"documented but not written: {required - meta.keys()}"
    assert meta.keys() <= doc.keys(), f"written but not documented: {meta.keys() - doc.keys()}"
    shard_files = {p.name.split("_")[0] for p in (tmp_path / "c/shards").iterdir()}
    assert shard_files == {"acts", "patches", "images", "failures", "shard"}


def test_sae_cfg_matches_format_page():
    doc = table_fields(REPO / "sae_core/FORMAT.md", "cfg.json")
    required = {name for name, optional in doc.items() if not optional}
    bare = cfg_json(SAEConfig(d_in=4, d_sae=8))
    full = cfg_json(SAEConfig(d_in=4, d_sae=8, metadata={"model_name": "ViT-B-32", "hook_name": "embed"}))
    assert required <= set(bare) and set(full) == set(doc), f"doc vs cfg.json: {set(doc) ^ set(full)}"
    assert None not in (full["model_name"], full["hook_name"]) and "hook_name" not in bare
    assert {f.name for f in dataclasses.fields(SAEConfig)} <= set(doc)


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_sae_tensor_table_matches_files(tmp_path, arch):
    from safetensors import safe_open

    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    doc = table_fields(REPO / "sae_core/FORMAT.md", "Tensors")
    save_sae(SparseAutoencoder(SAEConfig(d_in=4, d_sae=8, architecture=arch)), tmp_path / "s")
    with safe_open(str(tmp_path / "s/sae_weights.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    assert keys <= set(doc) and (keys == set(doc)) == (arch == "jumprelu")
    assert json.loads((tmp_path / "s/cfg.json").read_text())["format_version"] == 2


def test_atlas_manifest_matches_format_page(tmp_path):
    import numpy as np

    from precompute.atlas import AtlasConfig, build_atlas
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    save_sae(SparseAutoencoder(SAEConfig(d_in=4, d_sae=8)), tmp_path / "s")
    m = build_atlas(AtlasConfig(acts=str(tmp_path / "x.npy"), sae=str(tmp_path / "s"), out=str(tmp_path / "a"), top_images=2))
    doc = table_fields(REPO / "precompute/ATLAS.md", "manifest.json")
    assert set(doc) == set(m), f"doc vs manifest: {set(doc) ^ set(m)}"
    tree = (REPO / "precompute/ATLAS.md").read_text()
    for p in (tmp_path / "a").iterdir():
        assert p.name in tree, f"{p.name} is written but not documented"
