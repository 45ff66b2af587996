"""Activation extraction: exact hook values, bad inputs, kill-and-resume, 2 ranks, export."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import write_images, write_tiny_clip_config, write_tiny_kandinsky_prior
from precompute.activations import EmbedConfig, run_embed
from precompute.cache import export, read_images, read_metadata
from precompute.encoders import EncoderSpec, load_encoder
from sae_core.data import ActivationSource

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return write_tiny_clip_config(d)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    write_images(d, 10)
    return d


def embed(images, out, tiny, **kw) -> dict:
    enc = {k: kw.pop(k) for k in ("hook", "tokens", "patch_tokens") if k in kw}
    spec = EncoderSpec(model=tiny, pretrained="none", **enc)
    kw = {"workers": 0, "dtype": "float32", **kw}
    return run_embed(EmbedConfig(images=str(images), out=str(out), encoder=spec, **kw))


def preprocessed(encoder, folder: Path) -> torch.Tensor:
    refs = sorted(p for p in folder.rglob("*") if p.is_file())
    refs.sort(key=lambda p: p.relative_to(folder).as_posix())
    return torch.stack([encoder.preprocess(Image.open(p).convert("RGB")) for p in refs])


def manual_blocks(model, x):
    """The ViT forward replayed block by block, without hooks: (resid_post, mlp_out, attn_out) per layer."""
    visual = model.visual
    h = visual._embeds(x)
    outs = []
    for block in visual.transformer.resblocks:
        attn = block.ls_1(block.attention(q_x=block.ln_1(h)))
        h = h + attn
        mlp = block.ls_2(block.mlp(block.ln_2(h)))
        h = h + mlp
        outs.append((h, mlp, attn))
    return outs


def test_embed_equals_encode_image_and_patch_tokens_map_cls_exactly(tmp_path, images, tiny):
    meta = embed(images, tmp_path / "c", tiny, patch_tokens=True)
    assert meta["dim"] == 16 and meta["n_images"] == 10 and meta["n_patches"] == 16
    enc = load_encoder(EncoderSpec(model=tiny, pretrained="none", patch_tokens=True))
    x = preprocessed(enc, images)
    with torch.no_grad():
        expected = enc.module.encode_image(x)
        last = manual_blocks(enc.module, x)[-1][0]
        mapped = enc.module.visual.ln_post(last) @ enc.module.visual.proj
    rows = ActivationSource(tmp_path / "c").read(0, 10)
    np.testing.assert_allclose(rows, expected.numpy(), rtol=1e-5, atol=1e-6)
    patches = np.load(tmp_path / "c" / meta["shards"][0]["patches"])
    assert patches.shape == (10, 16, 16)
    np.testing.assert_allclose(patches, mapped[:, 1:].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mapped[:, 0].numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("site,index", [("resid_post", 0), ("mlp_out", 1), ("attn_out", 2)])
@pytest.mark.parametrize("tokens", ["cls", "spatial", "all"])
def test_block_hooks_equal_the_block_outputs(tmp_path, images, tiny, site, index, tokens):
    meta = embed(images, tmp_path / "c", tiny, hook=f"blocks.1.{site}", tokens=tokens)
    t = {"cls": [0], "spatial": list(range(1, 17)), "all": list(range(17))}[tokens]
    assert meta["tokens_per_image"] == len(t) and meta["dim"] == 32
    enc = load_encoder(EncoderSpec(model=tiny, pretrained="none"))
    with torch.no_grad():
        expected = manual_blocks(enc.module, preprocessed(enc, images))[1][index][:, t]
    rows = ActivationSource(tmp_path / "c").read(0, meta["n_rows"])
    np.testing.assert_allclose(rows, expected.reshape(-1, 32).numpy(), rtol=1e-5, atol=1e-5)


def test_kandinsky_prior_image_embeds(tmp_path, images):
    prior = write_tiny_kandinsky_prior(tmp_path / "prior")
    spec = EncoderSpec(model=prior, pretrained="none")
    meta = run_embed(EmbedConfig(images=str(images), out=str(tmp_path / "k"), encoder=spec, workers=0, dtype="float32"))
    assert meta["dim"] == 24
    enc = load_encoder(spec)
    with torch.no_grad():
        expected = enc.module(pixel_values=preprocessed(enc, images)).image_embeds
    np.testing.assert_allclose(ActivationSource(tmp_path / "k").read(0, 10), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_bad_images_are_skipped_and_listed(tmp_path, tiny):
    src = tmp_path / "mixed"
    write_images(src, 3)
    (src / "empty.png").write_bytes(b"")
    (src / "notes.jpg").write_text("not an image")
    good = (src / "img_001.png").read_bytes()
    (src / "cut.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (300, 300)).save(src / "huge.png")
    meta = embed(src, tmp_path / "c", tiny, max_pixels=200 * 200, workers=2)
    assert meta["n_images"] == 3 and meta["n_failed"] == 4
    failures = {
        json.loads(line)["path"]: json.loads(line)["reason"]
        for line in (tmp_path / "c/failures.jsonl").read_text().splitlines()
    }
    assert failures["empty.png"] == "empty file"
    assert failures["notes.jpg"].startswith("not an image")
    assert "truncated" in failures["cut.png"]
    assert failures["huge.png"].startswith("too large")
    ids = [r["id"] for r in read_images(tmp_path / "c")]
    assert [i.split("#")[0] for i in ids] == ["img_001.png", "img_002.jpg", "sub/img_000.jpg"]


def test_other_settings_on_an_existing_cache_are_refused(tmp_path, images, tiny):
    embed(images, tmp_path / "c", tiny)
    with pytest.raises(ValueError, match="other settings.*hook"):
        embed(images, tmp_path / "c", tiny, hook="blocks.0.resid_post", tokens="cls")


def _cache_files(cache: Path) -> dict[str, bytes]:
    skip = {"settings.json", "metadata.json"}
    return {
        p.relative_to(cache).as_posix(): p.read_bytes()
        for p in sorted(cache.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def _cli(tiny, images, out, *extra) -> list[str]:
    return [
        "-m",
        "precompute.embed",
        "--images",
        str(images),
        "--out",
        str(out),
        "--model",
        tiny,
        "--pretrained",
        "none",
        "--workers",
        "0",
        "--shard-size",
        "4",
        "--batch-size",
        "2",
        *extra,
    ]


def _embed_here(tiny, images, out, *extra) -> None:
    """`python -m precompute.embed` with the same flags, in this process (no second interpreter)."""
    from precompute.embed import main

    assert main(_cli(tiny, images, out, *extra)[2:]) == 0


def test_killed_run_resumes_to_the_same_cache(tmp_path, tiny, caplog):
    """A run killed by SIGKILL (its own interpreter) mid-way resumes to the cache of a run that
    was never killed."""
    src = tmp_path / "imgs"
    write_images(src, 120)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    _embed_here(tiny, src, tmp_path / "full")
    proc = subprocess.Popen(
        [sys.executable, *_cli(tiny, src, tmp_path / "killed")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = tmp_path / "killed/shards/shard_000002.json"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((tmp_path / "killed/shards").glob("shard_*.json")))
    assert 0 < done < 30, f"the kill should land mid-run ({done} of 30 shards done)"
    assert not (tmp_path / "killed/metadata.json").exists()
    with pytest.raises(FileNotFoundError, match="resume"):
        read_metadata(tmp_path / "killed")
    with caplog.at_level("INFO"):
        _embed_here(tiny, src, tmp_path / "killed")
    assert "resuming" in caplog.text
    assert _cache_files(tmp_path / "killed") == _cache_files(tmp_path / "full")
    a, b = read_metadata(tmp_path / "full"), read_metadata(tmp_path / "killed")
    assert a == b


def test_two_gloo_ranks_equal_one_process(tmp_path, tiny):
    src = tmp_path / "imgs"
    write_images(src, 22)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    _embed_here(tiny, src, tmp_path / "one")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    two = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", *_cli(tiny, src, tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert read_images(tmp_path / "one") == read_images(tmp_path / "two")
    x1 = ActivationSource(tmp_path / "one")
    x2 = ActivationSource(tmp_path / "two")
    np.testing.assert_array_equal(x1.read(0, x1.n_rows), x2.read(0, x2.n_rows))


def test_export_round_trip(tmp_path, images, tiny):
    embed(images, tmp_path / "c", tiny, hook="blocks.0.resid_post", tokens="spatial")
    out = export(tmp_path / "c", tmp_path / "x.npy")
    x = np.load(out)
    src = ActivationSource(tmp_path / "c")
    assert x.dtype == np.float32 and x.shape == (10 * 16, 32)
    np.testing.assert_array_equal(x, src.read(0, src.n_rows))
    ids = (tmp_path / "x.ids.txt").read_text().splitlines()
    imgs = read_images(tmp_path / "c")
    assert ids == [im["id"] for im in imgs for _ in range(16)]


def test_a_killed_decode_worker_is_restarted_and_the_cache_is_complete(tmp_path, tiny, monkeypatch, caplog):
    import precompute.activations as acts

    src = tmp_path / "imgs"
    write_images(src, 24)
    spec = EncoderSpec(model=tiny, pretrained="none")
    common = dict(images=str(src), encoder=spec, shard_size=4, batch_size=2)
    run_embed(EmbedConfig(out=str(tmp_path / "clean"), workers=0, **common))
    marker = tmp_path / "killed_once"
    original = acts._Images.__getitem__

    def dies_once(self, i):  # runs inside the forked worker process
        if i == 13 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, i)

    monkeypatch.setattr(acts._Images, "__getitem__", dies_once)
    with caplog.at_level("WARNING", logger="precompute.activations"):
        run_embed(EmbedConfig(out=str(tmp_path / "survived"), workers=1, **common))
    assert marker.exists() and "a decode worker died" in caplog.text
    assert _cache_files(tmp_path / "survived") == _cache_files(tmp_path / "clean")


def test_a_full_disk_is_a_clear_error_and_the_rerun_completes(tmp_path, tiny, monkeypatch, capsys):
    import errno

    import precompute.activations as acts
    from app.cli import main

    src = tmp_path / "imgs"
    write_images(src, 12)
    args = [
        "embed",
        "--images",
        str(src),
        "--model",
        tiny,
        "--pretrained",
        "none",
        "--workers",
        "0",
        "--shard-size",
        "4",
        "--batch-size",
        "2",
    ]
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    real_save = acts.atomic_save_npy
    calls = []

    def fills_up(path, array):
        calls.append(path)
        if len(calls) == 2:  # the second shard: the disk fills up in the middle of the file

            def partial_save(fh, arr):
                fh.write(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

            with monkeypatch.context() as m:
                m.setattr(np, "save", partial_save)
                real_save(path, array)
        real_save(path, array)

    monkeypatch.setattr(acts, "atomic_save_npy", fills_up)
    out = tmp_path / "full"
    assert main([*args, "--out", str(out)]) == 28
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "run the same command again" in err
    assert (out / "shards/shard_000000.json").exists() and not (out / "shards/shard_000001.json").exists()
    assert not (out / "metadata.json").exists() and not list(out.rglob("*.tmp"))  # nothing partial left
    monkeypatch.setattr(acts, "atomic_save_npy", real_save)
    assert main([*args, "--out", str(out)]) == 0
    assert _cache_files(out) == _cache_files(tmp_path / "clean")


def test_every_cache_reader_checks_the_format(tmp_path, images, tiny):
    """ActivationSource (train, metrics, atlas, link, eval) refuses a foreign or newer cache
    header by name, as read_metadata does."""
    embed(images, tmp_path / "c", tiny)
    meta_path = tmp_path / "c/metadata.json"
    meta = json.loads(meta_path.read_text())
    for bad, msg in (
        ({**meta, "format_version": 7}, "format_version 7"),
        ({**meta, "format": "saev-shards"}, "not a clipsae activation cache"),
        ({k: v for k, v in meta.items() if k != "format_version"}, "no valid format_version"),
    ):
        meta_path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=msg):
            ActivationSource(tmp_path / "c")
        with pytest.raises(ValueError, match=msg):
            read_metadata(tmp_path / "c")
    meta_path.unlink()
    with pytest.raises(FileNotFoundError, match="unfinished run: repeat the clipsae embed command"):
        ActivationSource(tmp_path / "c")
