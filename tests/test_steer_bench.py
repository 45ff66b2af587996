"""The steering workbench as plain handlers (tiny random Kandinsky on CPU): the strength ×
seed grid and its readouts (checked against the steerer's own encoders, run here), its
refusals and cancel, "Steer this" adding (never weakening, never two slots), slot messages
naming their slot, the guidance scale, and the session history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.handlers_steer import free_slot, slot_edits_from
from app.jobs import Cancelled, Job
from app.server import make_handlers
from app.steer import steer_embedding
from app.steer_grid import parse_numbers
from app.steer_history import MAX_RUNS, choices, compare, find, record
from app.ui_steer import _generate_view
from app_fixtures import build_app_data

STEPS = dict(steps=2, resolution=64)


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    atlas, katlas = build_app_data(tmp_path_factory.mktemp("bench"))
    handlers, _ = make_handlers(atlas, katlas, tiny_kandinsky=True, device="cpu", measure_timings=False)
    return handlers


def _live(h, n=2):
    k = h.steer_atlas
    return [int(i) for i in np.argsort(-np.asarray(k.max_activation))[:n]]


def _reencoded(h, image, j):
    s = h.steerer
    with torch.no_grad():
        return float(s.sae.encode(s.image_embeds(image)[0].float())[0, j])


def test_grid_cells_are_each_strength_times_each_seed_with_measured_readouts(h):
    a, b = _live(h)
    run = h.steer_grid("a red boat", None, f"{a}, {b}", "-1, 0, 2", "3 5", **STEPS, text="a photo of a dog")
    assert [(c.strength, c.seed) for c in run.cells] == [(st, sd) for st in (-1, 0, 2) for sd in (3, 5)]
    for c in run.cells:
        base = next(x for x in run.cells if x.seed == c.seed and x.strength == 0)
        plain, _ = h.steer("a red boat", "", seed=c.seed, **STEPS)  # the seed's unsteered image, made here
        assert np.array_equal(np.asarray(base.image), np.asarray(plain))
        for j in (a, b):
            assert c.before[j] == pytest.approx(_reencoded(h, plain, j), abs=1e-5)
            assert c.after[j] == pytest.approx(_reencoded(h, c.image, j), abs=1e-5)
    strong = next(c for c in run.cells if c.strength == 2)
    base = next(x for x in run.cells if x.seed == strong.seed and x.strength == 0)
    assert not np.array_equal(np.asarray(strong.image), np.asarray(base.image))
    # the CLIP change, recomputed with the inspector's encoder
    ins = h.inspector

    def cos(im):
        e = ins.run(im)["embedding"].astype(np.float64)
        t = ins.encoder.text_embeddings(["a photo of a dog"]).double().numpy()[0]
        return float(e @ t / np.linalg.norm(e))

    assert strong.clip_change[a] == pytest.approx(cos(strong.image) - cos(base.image), abs=1e-4)
    assert all(c.clip_change[a] == pytest.approx(0, abs=1e-9) for c in run.cells if c.strength == 0)
    assert "| +2 |" in run.summary() and "seed 5" in run.summary() and "a photo of a dog" in run.summary()
    assert strong.caption().startswith(f"seed {strong.seed}, strength +2 · #{a}: ")


def test_grid_without_a_text_reports_no_clip_change(h):
    (a,) = _live(h, 1)
    run = h.steer_grid("a red boat", None, str(a), "1", "0", **STEPS)
    assert run.texts == {} and run.cells[0].clip_change == {} and "no latent has a label" in run.summary()
    assert run.scales[a] == pytest.approx(float(h.steer_atlas.max_activation[a]))


@pytest.mark.parametrize(
    "latents, strengths, seeds, match",
    [
        ("1, 2, 3", "1", "0", "one or two steering latents"),
        ("", "1", "0", "one or two"),
        ("99999", "1", "0", "grid latent"),
        ("1", "", "0", "at least one strength"),
        ("1", "1 2 3 4 5 6 7 8", "0", "at most 7 strengths"),
        ("1", "11", "0", "within ±10"),
        ("1", "x", "0", "strength must be a number"),
        ("1", "1", "0.5", "seed"),
        ("1", "1", "0 1 2 3 4", "at most 4"),
    ],
)
def test_grid_refuses_bad_fields_with_their_names(h, latents, strengths, seeds, match):
    with pytest.raises(ValueError, match=match):
        h.steer_grid("a red boat", None, latents, strengths, seeds, **STEPS)


def test_a_cancelled_grid_stops_and_frees_the_queue(h):
    job = Job()
    calls = []
    hook = h.steerer.pipes.decoder.unet.register_forward_pre_hook(lambda *a: calls.append(1) or job.cancel())
    try:
        with pytest.raises(Cancelled):
            h.steer_grid("a quiet lake", None, str(_live(h, 1)[0]), "1 2", "7 8", steps=5, resolution=64, job=job)
    finally:
        hook.remove()
    assert len(calls) == 1 and h.steerer.queue.running is None


def test_guidance_scale_reaches_the_decoder_and_is_checked(h, monkeypatch):
    seen, real = [], h.steerer.pipes.decoder

    def spy(*args, **kwargs):
        seen.append(kwargs["guidance_scale"])
        return real(*args, **kwargs)

    monkeypatch.setattr(h.steerer.pipes, "decoder", spy)
    h.steerer.decode(*h.steerer.prior_embeds("a boat", 0, 2), seed=0, steps=2, size=64, guidance=7.5)
    monkeypatch.undo()
    assert seen == [7.5]
    with pytest.raises(ValueError, match="guidance scale must be between 1 and"):
        h.generate_view("a boat", None, 0, 2, 64, [], guidance=0.5)
    one, four = (h.generate_view("a boat", None, 2, 2, 64, [], guidance=g).original for g in (1.0, 4.0))
    assert not np.array_equal(np.asarray(one), np.asarray(four))


def test_slot_messages_name_the_slot_the_user_sees(h):
    d = h.steerer.sae.cfg.d_sae
    with pytest.raises(ValueError, match="slot 3's latent"):
        slot_edits_from([("2.5", "set", 1.0)], d, 3)
    slots = ["", "set", 1.0, "x", "add", 1.0, "", "set", 0, "", "set", 0]
    with pytest.raises(ValueError, match="slot 2's latent"):
        _generate_view(h, "a boat", None, 0, 2, 64, "", "multiply", False, {}, slots, None, job=Job())
    slots[3], slots[5] = "3", "nan"
    with pytest.raises(ValueError, match="slot 2's value"):
        _generate_view(h, "a boat", None, 0, 2, 64, "", "multiply", False, {}, slots, None, job=Job())


def test_steer_this_adds_so_the_latent_only_grows_and_never_fills_two_slots(h):
    k = h.steer_atlas
    j = h.landing(k.name)[1]
    slot, edit, origin, message = h.steer_this_edit(k.name, j, None, ["", "", "", ""])
    assert (slot, edit.latent, edit.mode, origin) == (0, j, "add", None)
    assert edit.value == pytest.approx(float(k.max_activation[j]), rel=2e-3) and "slot 1" in message
    # the edit moves the embedding along +direction j from wherever the prompt has it (a set to the
    # atlas maximum would pull a prompt that has more of latent j back down)
    x, _ = h.steerer.prior_embeds("a red boat", 1, 2)
    moved = (steer_embedding(h.steerer.sae, x, [edit]) - x).double().flatten()
    direction = h.steerer.sae.W_dec[j].detach().double().flatten()
    assert float(torch.nn.functional.cosine_similarity(moved, direction, dim=0)) == pytest.approx(1.0, abs=1e-4)
    view = h.generate_view("a red boat", None, 1, 2, 64, [edit], causal=False)
    assert f"latent {j} + direction × {edit.value:.3g}" in view.readout
    again = h.steer_this_edit(k.name, j, None, ["7", str(j), "", ""])
    assert again[0] == 1 and "already in slot 2" in again[3]
    assert free_slot(["7", "", "", ""], j) == (1, False)
    with pytest.raises(ValueError, match="all 4 slots are in use"):
        h.steer_this_edit(k.name, j, None, ["1", "2", "3", "4"])


def test_parse_numbers_keeps_order_and_drops_repeats():
    assert parse_numbers("2, -1 2 0", "strength", 7) == [2.0, -1.0, 0.0]
    assert parse_numbers("1,3", "seed", 4, whole=True) == [1.0, 3.0]


def test_history_records_newest_first_restores_and_compares():
    hist = None
    for n in range(3):
        hist = record(hist, "generate", {"prompt": "a boat", "seed": n, "slots": [(3, "add", 1.5)]}, [], f"r{n}")
    hist = record(
        hist, "grid", {"prompt": "a boat", "seed": 0, "grid_latents": "3", "strengths": "1", "seeds": "0"}, [], "g"
    )
    titles = choices(hist)
    assert [r.number for r in hist] == [4, 3, 2, 1] and titles[0].startswith("#4 grid")
    assert "3 add 1.5" in titles[1] and "seed 2" in titles[1]
    assert find(hist, titles[2]).readout == "r1"
    a, b, line = compare(hist, titles[1], titles[3])
    assert (a.number, b.number) == (3, 1) and line == "#3 and #1 differ in: seed"
    with pytest.raises(ValueError, match="choose a run"):
        find(hist, "#99 nothing")
    with pytest.raises(ValueError, match="no run yet"):
        find([], None)
    for _ in range(MAX_RUNS + 5):
        hist = record(hist, "generate", {"seed": 0}, [], "")
    assert len(hist) == MAX_RUNS and hist[0].number == 4 + MAX_RUNS + 5
