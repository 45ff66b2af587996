"""The real Kandinsky loader, exercised: tiny pipelines built from the real classes, saved
with `save_pretrained`, loaded back through `load_pipelines` from local folders and
through the Hugging Face cache (a temporary HF_HUB_CACHE laid out like the hub's), on the
CPU in float32; an incomplete cache is refused by name and turns steering off, never the
server. With Kandinsky 2.2 itself in the cache, `pytest -m slow` checks bit-exact identity
steering on the real pipelines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app.kandinsky import DECODER_ID, PRIOR_ID, TINY_DIM, kandinsky_available, load_pipelines, make_tiny_pipelines
from app.steer import Edit, Steerer
from sae_core.config import SAEConfig
from sae_core.sae import SparseAutoencoder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("kandinsky")
    pipes = make_tiny_pipelines(seed=0)
    pipes.prior.save_pretrained(d / "prior")
    pipes.decoder.save_pretrained(d / "decoder")
    return d, pipes


def _sae(d_in: int, d_sae: int = 64) -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=d_sae), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    return sae.eval()


def _identity_is_bit_exact(steerer: Steerer, prompt: str, **kw) -> None:
    x, _ = steerer.prior_embeds(prompt, seed=kw["seed"], steps=kw["prior_steps"])
    active = [i for i, _ in steerer.active_latents(x, n=8)]
    assert active
    original, steered = steerer.steer(prompt, [Edit(i, "multiply", 1.0) for i in active], **kw)
    assert np.array_equal(np.asarray(original), np.asarray(steered))
    _, changed = steerer.steer(prompt, [Edit(active[0], "multiply", 40.0)], **kw)
    assert not np.array_equal(np.asarray(original), np.asarray(changed))


def test_load_pipelines_from_local_folders(saved):
    d, built = saved
    loaded = load_pipelines(str(d / "prior"), str(d / "decoder"), device="cpu", dtype=torch.float32)
    assert not loaded.tiny and loaded.embed_dim == TINY_DIM
    assert next(loaded.decoder.unet.parameters()).dtype == torch.float32
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = built.prior("a red boat", num_inference_steps=2, generator=g()).image_embeds
    b = loaded.prior("a red boat", num_inference_steps=2, generator=g()).image_embeds
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # same weights; kernels may sum in another order
    ia = built.decoder(
        image_embeds=a, negative_image_embeds=a * 0, height=64, width=64, num_inference_steps=2, generator=g()
    ).images[0]
    ib = loaded.decoder(
        image_embeds=a, negative_image_embeds=a * 0, height=64, width=64, num_inference_steps=2, generator=g()
    ).images[0]
    assert np.abs(np.asarray(ia).astype(int) - np.asarray(ib).astype(int)).max() <= 3
    _identity_is_bit_exact(Steerer(loaded, _sae(TINY_DIM)), "a red boat", seed=1, steps=2, size=64, prior_steps=2)


def _hub_cache(saved_dir: Path, cache: Path) -> None:
    """Lay the saved folders out as the hub cache does: models--org--name/{refs/main, snapshots/<commit>/}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo, folder in ((PRIOR_ID, "prior"), (DECODER_ID, "decoder")):
        base = cache / ("models--" + repo.replace("/", "--"))
        (base / "refs").mkdir(parents=True)
        (base / "refs" / "main").write_text(commit)
        shutil.copytree(saved_dir / folder, base / "snapshots" / commit)


def _run(code: str, cache: Path) -> str:
    """Python in a fresh process whose Hugging Face cache is `cache` (read when the hub client loads)."""
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "",
    }
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_load_pipelines_through_the_hf_cache_and_refuse_an_incomplete_one(saved, tmp_path):
    """One fresh interpreter (the cache is read when the hub client loads): the default hub ids
    load offline from the cache; with the decoder's UNet weights deleted, steering is refused
    by name."""
    d, _ = saved
    cache = tmp_path / "hub"
    _hub_cache(d, cache)
    snapshots = cache / f"models--{DECODER_ID.replace('/', '--')}" / "snapshots"
    out = _run(
        "import pathlib\n"
        "from app.kandinsky import DECODER_ID, PRIOR_ID, kandinsky_available, load_pipelines, missing_parts\n"
        "from app.server import _pipelines\n"
        "assert kandinsky_available()\n"
        "p = load_pipelines()\n"  # the default hub ids, resolved in the cache, offline
        "print(p.embed_dim, p.tiny, next(p.decoder.unet.parameters()).dtype)\n"
        f"weights = list(pathlib.Path({str(snapshots)!r}).rglob('unet/*.safetensors'))\n"
        "assert weights\n"
        "for w in weights: w.unlink()\n"
        "notes = []\n"
        "assert not kandinsky_available() and missing_parts(DECODER_ID) == ['unet/ (weights)']\n"
        "assert _pipelines(PRIOR_ID, DECODER_ID, False, 'cpu', notes) is None\n"
        "print(notes[0])",
        cache,
    )
    first, note = out.split("\n", 1)
    assert first.split() == [str(TINY_DIM), "False", "torch.float32"]
    assert note.startswith("Steering is unavailable") and "unet/ (weights)" in note


@pytest.mark.slow
def test_real_kandinsky_identity_steering_is_bit_exact():
    if not kandinsky_available():
        pytest.skip(
            f"Kandinsky 2.2 ({PRIOR_ID} and {DECODER_ID}) is not in the Hugging Face cache; download both "
            "(huggingface-cli download …) to run this check"
        )
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    pipes = load_pipelines(device=device, dtype=torch.float16 if cuda else torch.float32)
    assert pipes.embed_dim == 1280
    steerer = Steerer(pipes, _sae(1280, 4096).to(device), device=device)
    _identity_is_bit_exact(
        steerer, "a red horse on a beach", seed=0, steps=10, size=512 if cuda else 256, prior_steps=10
    )


def test_kandinsky_options_set_precision_attention_and_a_compiled_decoder(saved):
    from app.cli import build_parser
    from app.configs import KandinskyOptions
    from app.kandinsky import resolve_dtype
    from sae_core.cliargs import config_from_args

    d, _ = saved
    args = build_parser().parse_args(
        ["serve", "--atlas", "a", "--precision", "bfloat16", "--attention", "eager", "--compile-decoder"]
    )
    options = config_from_args(KandinskyOptions, args)
    assert options == KandinskyOptions(precision="bfloat16", attention="eager", compile_decoder=True)
    p = load_pipelines(str(d / "prior"), str(d / "decoder"), device="cpu", options=options)
    assert next(p.decoder.unet.parameters()).dtype == torch.bfloat16 == next(p.prior.prior.parameters()).dtype
    assert hasattr(p.decoder.unet, "_orig_mod")  # wrapped by torch.compile (compiled on its first call)
    procs = {type(v).__name__ for v in p.decoder.unet._orig_mod.attn_processors.values()}
    assert procs == {"AttnAddedKVProcessor"} and p.prior.text_encoder.config._attn_implementation == "eager"
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda:1") == torch.float16
    with pytest.raises(ValueError, match="--precision"):
        resolve_dtype("float8", "cpu")
