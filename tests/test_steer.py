"""Kandinsky steering with tiny random components: identity is bit-exact, edits change the
image, the prior and the original are cached, a cancelled job stops the diffusion loop at
its next step, bad values are refused."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from app.jobs import Cancelled, Job
from app.kandinsky import TINY_DIM, make_tiny_pipelines
from app.steer import Edit, Steerer, parse_edits, steer_embedding
from sae_core.config import SAEConfig
from sae_core.sae import SparseAutoencoder

STEPS = dict(seed=3, steps=2, size=64, prior_steps=2)


@pytest.fixture(scope="module")
def pipes():
    return make_tiny_pipelines(seed=0)


def make_sae(d: int = TINY_DIM, normalize: str = "none") -> SparseAutoencoder:
    g = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=64, normalize_activations=normalize), generator=g)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)  # plenty of active latents
    return sae.eval()


@pytest.fixture(scope="module")
def steerer(pipes):
    return Steerer(pipes, make_sae())


def test_multipliers_of_one_reproduce_the_original_bit_exactly(steerer):
    x, _ = steerer.prior_embeds("a red horse", seed=3, steps=2)
    active = [i for i, _ in steerer.active_latents(x, n=5)]
    assert active, "the test SAE should have active latents"
    original, steered = steerer.steer("a red horse", [Edit(i, "multiply", 1.0) for i in active], **STEPS)
    assert np.array_equal(np.asarray(original), np.asarray(steered))
    assert torch.equal(steer_embedding(steerer.sae, x, [Edit(active[0], "multiply", 1.0)]), x)


def test_a_large_edit_changes_the_image(steerer):
    x, _ = steerer.prior_embeds("a red horse", seed=3, steps=2)
    top = steerer.active_latents(x, n=1)[0][0]
    original, steered = steerer.steer("a red horse", [Edit(top, "multiply", 50.0)], **STEPS)
    assert not np.array_equal(np.asarray(original), np.asarray(steered))
    _, added = steerer.steer("a red horse", [Edit(7, "add", 20.0)], **STEPS)
    assert not np.array_equal(np.asarray(original), np.asarray(added))


@pytest.mark.parametrize("normalize", ["none", "unit_norm"])
def test_delta_form_equals_decoded_edit_plus_error(normalize):
    sae = make_sae(normalize=normalize)
    x = torch.randn(2, TINY_DIM, generator=torch.Generator().manual_seed(1)) * 3
    edits = [Edit(1, "multiply", 3.0), Edit(2, "set", 0.5), Edit(4, "add", 2.0)]
    with torch.no_grad():
        x_norm, ctx = sae.normalize(x)
        f = sae.activate(sae.pre_activation(x_norm))
        err = x - sae.decode(f, ctx)
        f2 = f.clone()
        f2[:, 1] *= 3.0
        f2[:, 2] = 0.5
        scale = ctx.scale_b1 if ctx.scale_b1 is not None else 1.0
        expected = sae.decode(f2, ctx) + err + scale * 2.0 * sae.W_dec[4]
    torch.testing.assert_close(steer_embedding(sae, x, edits), expected, rtol=1e-5, atol=1e-5)


def test_prior_is_cached_per_prompt_seed_and_steps(pipes):
    s = Steerer(pipes, make_sae())
    s.steer("a blue boat", [Edit(0, "multiply", 2.0)], **STEPS)
    s.steer("a blue boat", [Edit(0, "multiply", 5.0)], **STEPS)  # a slider moved: decoder only
    assert s.prior_calls == 1
    s.steer("a blue boat", [], **{**STEPS, "seed": 4})
    assert s.prior_calls == 2


def test_uploaded_image_path(steerer):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), np.uint8))
    original, steered = steerer.steer("", [Edit(0, "multiply", 1.0)], image=img, **STEPS)
    assert np.array_equal(np.asarray(original), np.asarray(steered))


@pytest.mark.parametrize(
    "edit,message",
    [
        (Edit(0, "multiply", math.nan), "finite"),
        (Edit(0, "multiply", math.inf), "finite"),
        (Edit(0, "set", 1e6), "within"),
        (Edit(-1, "multiply", 2.0), "out of range"),
        (Edit(64, "multiply", 2.0), "out of range"),
        (Edit("3", "multiply", 2.0), "integer"),
        (Edit(0, "scale", 2.0), "mode"),
    ],
)
def test_bad_edits_are_refused(steerer, edit, message):
    with pytest.raises(ValueError, match=message):
        steerer.steer("a red horse", [edit], **STEPS)


def test_bad_prompt_resolution_and_dimensions_are_refused(pipes, steerer):
    with pytest.raises(ValueError, match="prompt is empty"):
        steerer.steer("   ", [], **STEPS)
    with pytest.raises(ValueError, match="resolution"):
        steerer.steer("a red horse", [], **{**STEPS, "size": 100})
    with pytest.raises(ValueError, match="1280|32-d"):
        Steerer(pipes, make_sae(d=16))


def test_uploaded_image_embedding_is_cached(pipes, monkeypatch):
    s = Steerer(pipes, make_sae())
    calls = []
    real = s.image_embeds
    monkeypatch.setattr(s, "image_embeds", lambda im: calls.append(1) or real(im))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), np.uint8))
    s.steer("", [Edit(0, "multiply", 2.0)], image=img, **STEPS)
    s.steer("", [Edit(0, "multiply", 3.0)], image=img.copy(), **STEPS)  # same content: a slider moved
    assert len(calls) == 1
    other = Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 40, 3), np.uint8))
    s.steer("", [], image=other, **STEPS)
    assert len(calls) == 2


def test_parse_edits():
    assert parse_edits("12:2.5, 40:0; 7 : -1") == [(12, 2.5), (40, 0.0), (7, -1.0)]
    assert parse_edits("  ") == []
    with pytest.raises(ValueError, match="latent:value pairs, e.g."):
        parse_edits("12=2")
    with pytest.raises(ValueError, match="with numbers"):
        parse_edits("x:2")
    with pytest.raises(ValueError, match="whole number"):
        parse_edits("2.5:1")  # never truncated to latent 2


def test_a_cancelled_job_stops_the_diffusion_loop_at_its_next_step(steerer):
    unet_calls = []
    hook = steerer.pipes.decoder.unet.register_forward_pre_hook(lambda *a: unet_calls.append(1))
    steps_seen = []

    def report(fraction, text):
        steps_seen.append(text)
        if len(steps_seen) == 3:
            job.cancel()  # as the Stop button does, from another thread, while the loop runs

    job = Job(report=report)
    x, neg = steerer.prior_embeds("a red horse", seed=3, steps=2)
    try:
        with pytest.raises(Cancelled):
            steerer.decode(x, neg, seed=3, steps=50, size=64, job=job)
    finally:
        hook.remove()
    assert steps_seen == [f"decoder: step {i}/50" for i in (1, 2, 3)]
    assert len(unet_calls) == 4  # the step under way when Stop came finished (one UNet call each), then it stopped
    with pytest.raises(Cancelled):
        steerer.decode(x, neg, seed=3, steps=50, size=64, job=job)  # a cancelled job does not start again
    assert len(unet_calls) == 4


def test_the_original_is_decoded_once_per_start_seed_steps_and_size(pipes):
    s = Steerer(pipes, make_sae())
    s.steer("a green boat", [Edit(0, "multiply", 2.0)], **STEPS)
    assert s.decoder_calls == 2
    s.steer("a green boat", [Edit(0, "multiply", 3.0)], **STEPS)  # a slider moved: only the steered image
    assert s.decoder_calls == 3
    s.steer("a green boat", [Edit(0, "multiply", 3.0)], **{**STEPS, "size": 128})
    assert s.decoder_calls == 5
