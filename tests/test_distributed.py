"""`torchrun -m precompute.atlas` and `torchrun -m precompute.link` with 2 gloo ranks build the
same atlas and links as one process, bit for bit (every array, index and file); embed's ranks
share one cache the same way, and every command sets its process group up in one place."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import write_images, write_tiny_clip_config
from precompute.activations import EmbedConfig, run_embed
from precompute.atlas import AtlasConfig, build_atlas
from precompute.encoders import EncoderSpec
from precompute.link import link
from precompute.ranks import Ranks
from sae_core.config import SAEConfig
from sae_core.io import save_sae
from sae_core.sae import SparseAutoencoder

REPO = Path(__file__).resolve().parents[1]


def torchrun(module: str, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def same_folders(a: Path, b: Path) -> None:
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel == "manifest.json":
            ma, mb = (json.loads((x / rel).read_text()) for x in (a, b))
            ma["config"].pop("out"), mb["config"].pop("out")
            ma.pop("images_root_relative"), mb.pop("images_root_relative")
            assert ma == mb  # including the SHA-256 of every file
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    write_images(d / "imgs", 23, seed=4)
    spec = EncoderSpec(model=write_tiny_clip_config(d), pretrained="none", patch_tokens=True)
    run_embed(EmbedConfig(images=str(d / "imgs"), out=str(d / "cache"), encoder=spec, workers=0, shard_size=8))
    for name, s, seed in (("sae", 40, 0), ("ksae", 28, 1)):
        sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=s), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            sae.b_enc.copy_(torch.randn(s, generator=torch.Generator().manual_seed(seed)) * 0.3 - 0.2)
        save_sae(sae, d / name)
    return d


def test_two_gloo_ranks_build_the_atlas_of_one_process(cache):
    flags = [
        "--acts",
        str(cache / "cache"),
        "--sae",
        str(cache / "sae"),
        "--top-images",
        "5",
        "--no-labels",
        "--stats-images",
        "15",
        "--seed",
        "7",
        "--block-mb",
        "0.002",
        "--device",
        "cpu",
    ]
    r = torchrun("precompute.atlas", *flags, "--out", str(cache / "two"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("atlas: 40 latents") == 1  # rank 0 reports
    build_atlas(
        AtlasConfig(
            acts=str(cache / "cache"),
            sae=str(cache / "sae"),
            out=str(cache / "one"),
            top_images=5,
            labels=False,
            stats_images=15,
            seed=7,
            block_mb=0.002,
            device="cpu",
        )
    )
    same_folders(cache / "one", cache / "two")
    m = json.loads((cache / "one/manifest.json").read_text())
    assert m["masks"] and m["stats_images"] == 15 and m["n_images"] == 23
    assert not list(cache.glob(".*.parts")), "the ranks' parts are cleaned up"


def test_two_gloo_ranks_link_like_one_process(cache, tmp_path):
    import shutil

    build_atlas(
        AtlasConfig(
            acts=str(cache / "cache"),
            sae=str(cache / "ksae"),
            out=str(tmp_path / "k"),
            top_images=5,
            labels=False,
            masks=False,
            device="cpu",
        )
    )
    for sub in ("a1", "a2"):
        shutil.copytree(cache / "one" if (cache / "one").exists() else cache / "two", tmp_path / sub)
    shutil.copytree(tmp_path / "k", tmp_path / "k2")
    link(tmp_path / "a1", tmp_path / "k", top=4, budget_mb=0.0005)
    r = torchrun(
        "precompute.link",
        str(tmp_path / "a2"),
        str(tmp_path / "k2"),
        "--top-links",
        "4",
        "--budget-mb",
        "0.0005",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for x, y in (("a1", "a2"), ("k", "k2")):
        names = sorted(p.name for p in (tmp_path / x / "links").iterdir())
        assert names == sorted(p.name for p in (tmp_path / y / "links").iterdir()) and len(names) == 3
        for name in names:
            if name.endswith(".npy"):
                assert np.array_equal(np.load(tmp_path / x / "links" / name), np.load(tmp_path / y / "links" / name))


def test_a_failing_rank_is_one_line_and_a_nonzero_exit(cache):
    """A rank that reaches the error reports it in one line (torchrun's launcher then adds its own report).

    At least one rank does; the other may be stopped by the launcher before it gets there (a busy
    machine), so the count is not fixed, but every error line is the one-line message."""
    r = torchrun(
        "precompute.atlas",
        "--acts",
        str(cache / "nothing"),
        "--sae",
        str(cache / "sae"),
        "--out",
        str(cache / "x"),
        "--device",
        "cpu",
    )
    assert r.returncode != 0
    message = "precompute.atlas: error: --acts must be a .npy matrix [N, d] or an activation cache folder; got "
    errors = [line for line in r.stderr.splitlines() if "precompute.atlas: error:" in line]
    assert 1 <= len(errors) <= 2 and all(line.startswith(message) for line in errors), r.stderr[-3000:]
    assert "precompute/atlas.py" not in r.stderr and not (cache / "x").exists()


class _SequentialRank(Ranks):
    """One rank of several, run one after the other in this process (nothing to wait for)."""

    def barrier(self) -> None:
        pass


def test_embed_ranks_write_the_cache_of_one_process(cache, tmp_path):
    spec = EncoderSpec(model=write_tiny_clip_config(cache), pretrained="none", patch_tokens=True)
    cfg = EmbedConfig(images=str(cache / "imgs"), out=str(tmp_path / "two"), encoder=spec, workers=0, shard_size=8)
    assert run_embed(cfg, _SequentialRank(1, 2)) is None  # rank 1: shard 1 only, no metadata
    assert sorted(p.name for p in (tmp_path / "two/shards").glob("shard_*.json")) == ["shard_000001.json"]
    assert run_embed(cfg, _SequentialRank(0, 2))["n_images"] == 23
    same_folders(cache / "cache", tmp_path / "two")


def test_one_process_group_setup():
    """embed, atlas and link all start torch.distributed through precompute.ranks.ranks_from_env
    (LOCAL_RANK's GPU, set_device, gloo or nccl)."""
    sources = [p for pkg in ("sae_core", "precompute", "evaluation", "app") for p in (REPO / pkg).rglob("*.py")]
    setups = sorted(
        str(p.relative_to(REPO))
        for p in sources
        if "init_process_group" in p.read_text() or "% torch.cuda.device_count()" in p.read_text()
    )
    assert setups == ["precompute/ranks.py"]
    for module in ("embed", "atlas", "link"):
        assert "ranks_from_env(" in (REPO / "precompute" / f"{module}.py").read_text()
