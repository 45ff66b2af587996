"""The app's handlers as plain functions (no server): landing, navigation, search, deep
links, "Steer this", empty slots, slider scales, the readout and causal check, patch clicks,
the histogram, icons. Expected values are computed here from the atlas arrays and the SAE."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import gradio as gr
import pytest
import torch
from PIL import Image

from app.handlers_steer import slot_edits
from app.readout import COSINE_WARN, Shift
from app.server import make_handlers
from app.steer import steer_embedding
from app_fixtures import K_LATENTS
from sae_core.edit import Edit

STEPS = dict(seed=1, steps=2, resolution=64)


@pytest.fixture(scope="module")
def h(app_data):
    atlas, katlas = app_data / "atlas", app_data / "katlas"  # conftest's, built once for the suite
    handlers, _ = make_handlers(atlas, katlas, tiny_kandinsky=True, device="cpu", measure_timings=False)
    return handlers


def test_landing_is_a_live_interesting_latent(h):
    for atlas in (h.atlas, h.steer_atlas):
        name, latent = h.landing(atlas.name)
        freq = np.asarray(atlas.frequency)
        assert name == atlas.name and freq[latent] > 0
        # the largest frequency × max among the latents firing on fewer than 10% of the images, the
        # Overview's "dense" line (none is labelled here)
        pool = [i for i in range(atlas.n_latents) if 0 < freq[i] < 0.1] or list(np.flatnonzero(freq > 0))
        best = max(pool, key=lambda i: freq[i] * float(atlas.max_activation[i]))
        assert latent == best
    assert h.deep_link({}) == (h.atlas.name, h.landing()[1], "")


def test_previous_and_next_step_over_dead_latents(h):
    a = h.steer_atlas
    live = [i for i in range(a.n_latents) if a.frequency[i] > 0]
    assert len(live) < a.n_latents  # the fixture has dead latents to skip
    for k, latent in enumerate(live):
        assert h.step(a.name, latent, 1) == live[(k + 1) % len(live)]
        assert h.step(a.name, latent, -1) == live[k - 1]
    dead = K_LATENTS - 1
    assert a.frequency[dead] == 0 and h.step(a.name, dead, 1) == live[0] and h.step(a.name, dead, -1) == live[-1]


def test_search_never_lists_dead_latents(h):
    nearest = [i for i, _ in h.inspector.text_to_latents("a photo of a dog", 40)]
    assert any(h.atlas.frequency[i] == 0 for i in nearest)  # the text search alone would list dead latents
    for sae, text in ((h.atlas.name, ""), (h.atlas.name, "a photo of a dog"), (h.steer_atlas.name, "")):
        atlas, _ = h.pick(sae)
        rows = h.search(text, sae)
        assert rows and all(atlas.frequency[r[0]] > 0 for r in rows)
        assert all(math.isclose(r[2], round(100 * float(atlas.frequency[r[0]]), 1)) for r in rows)  # percent
    assert h.search("dog", h.steer_atlas.name) == []  # no labels and no text space: nothing to match
    assert "no labels" in h.search_hint(h.steer_atlas.name) and "text" in h.search_hint(h.atlas.name)


def test_deep_links_with_bad_values_open_the_landing_page_and_say_why(h):
    landing = h.landing()[1]
    sae, latent, notice = h.deep_link({"sae": "bogus", "latent": "5"})
    assert (sae, latent) == (h.atlas.name, 5) and "unknown SAE 'bogus'" in notice and "<" not in notice
    sae, latent, notice = h.deep_link({"latent": "abc"})
    assert latent == landing and "'abc' is not valid" in notice
    sae, latent, notice = h.deep_link({"sae": h.steer_atlas.name, "latent": "2.5"})
    assert sae == h.steer_atlas.name and latent == h.steer_atlas.landing_latent() and "whole number" in notice
    view = h.page_view(sae, latent, notice=notice)
    assert view.header.startswith("> ⚠️") and "2.5" in view.header


def test_page_states_units_once_and_links_in_place(h):
    a = h.atlas
    latent = h.landing()[1]
    view = h.page_view(a.name, latent)
    freq = float(a.frequency[latent])
    assert f"Fires on **{freq:.1%}**" in view.header and "over the images where it fires" in view.header
    j, c = a.neighbours(latent)[0]
    assert f"[{j}](?sae={a.name}&latent={j})" in view.header  # a link the page script opens in place
    assert f"latent={view.linked[0].split()[0]})" in view.header.split("Co-activates")[1]
    assert all(
        caption.split(" · ")[0] == f"{t['value']:.3g}" for (_, caption), t in zip(view.gallery, a.page(latent).top)
    )
    assert len(view.bands) == 4 * len(a.page(latent).bands)  # placeholders keep every band on its own row


def test_histogram_is_a_png_with_a_log_option(h):
    latent = h.landing()[1]
    lin = h.page_view(h.atlas.name, latent).histogram
    log = h.page_view(h.atlas.name, latent, log_counts=True).histogram
    assert lin != log
    for path in (lin, log):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width >= 400


def test_steer_this_from_a_clip_page_sets_the_linked_latent_to_its_highest_activation(h):
    a, k = h.atlas, h.steer_atlas
    latent = h.landing()[1]
    choices = h.linked_choices(latent, a.name)
    assert choices and all(k.frequency[int(c.split()[0])] > 0 for c in choices)
    s = h.steer_this(a.name, latent, choices[0])
    j = int(choices[0].split()[0])
    top = float(k.max_activation[j])
    assert (s.latent, s.mode, s.origin) == (j, "set", (a.name, latent)) and s.value == pytest.approx(top, rel=2e-3)
    assert f"set to {s.value:.3g}" in s.message and f"linked from {a.name} latent {latent}" in s.message
    view = h.generate_view(
        "a red boat", None, **STEPS, edits=[Edit(s.latent, s.mode, s.value)], origins={s.latent: s.origin}
    )
    assert not np.array_equal(np.asarray(view.original), np.asarray(view.steered))  # it does something
    assert f"latent {j} set to" in view.readout and f"{a.name} {latent} (linked)" in view.readout


def test_steer_this_on_a_steering_page_steers_that_latent_and_refuses_dead_ones(h):
    k = h.steer_atlas
    j = h.landing(k.name)[1]
    s = h.steer_this(k.name, j)
    assert (s.latent, s.mode, s.origin) == (j, "set", None)
    view = h.page_view(k.name, j)
    assert view.steerable and "(steering SAE)" in view.header and "steer them" not in view.header
    with pytest.raises(ValueError, match="never fires"):
        h.steer_this(k.name, K_LATENTS - 1)
    with pytest.raises(ValueError, match="no linked steering latent"):
        h.steer_this(h.atlas.name, 0, None)


def test_empty_slots_are_no_edit(h):
    d = h.steerer.sae.cfg.d_sae
    empty = [("", "add", 5.0), (None, "set", 1.0), (float("nan"), "add", 3.0), ("  ", "multiply", 0.0)]
    assert slot_edits(empty, d) == []
    assert slot_edits([("", "add", 5.0), ("3", "set", 0.5)], d) == [Edit(3, "set", 0.5)]
    with pytest.raises(ValueError, match="slot 1's latent"):
        slot_edits([("2.5", "set", 1.0)], d)
    view = h.generate_view("a red boat", None, **STEPS, edits=slot_edits(empty, d))
    assert np.array_equal(np.asarray(view.original), np.asarray(view.steered)) and "No edit" in view.readout


def test_slot_sliders_follow_each_latents_activation_scale(h):
    k = h.steer_atlas
    j = h.landing(k.name)[1]
    top = float(k.max_activation[j])
    lo, hi, step, value, label = h.slot_scale(str(j), "set")
    assert lo == 0 and hi == pytest.approx(3 * top, rel=2e-3) and value == pytest.approx(top, rel=2e-3)
    assert step <= top / 100 and f"{top:.3g}" in label
    lo, hi, *_ = h.slot_scale(str(j), "add")
    assert lo == -hi
    assert h.slot_scale(str(j), "multiply")[:4] == (-4.0, 8.0, 0.05, 2.0)
    assert "not a latent" in h.slot_scale("9999", "set")[4]


def test_readout_reports_activations_norm_ratio_and_cosine(h):
    s = h.steerer
    x, _ = s.prior_embeds("a red boat", 1, 2)
    j = h.landing(h.steer_atlas.name)[1]
    edits = [Edit(j, "add", 50.0)]
    view = h.generate_view("a red boat", None, **STEPS, edits=edits)
    steered = steer_embedding(s.sae, x, edits)
    with torch.no_grad():
        before, after = float(s.sae.encode(x.float())[0, j]), float(s.sae.encode(steered.float())[0, j])
    x64, y64 = x.double().flatten(), steered.double().flatten()
    ratio, cos = float(y64.norm() / x64.norm()), float(x64 @ y64 / (x64.norm() * y64.norm()))
    assert f"{before:.3g} → **{after:.3g}**" in view.readout
    assert f"= **{ratio:.3f}**" in view.readout and f"= **{cos:.3f}**" in view.readout
    assert ("far from the original embedding" in view.readout) == Shift(ratio, cos).far
    assert Shift(1.0, COSINE_WARN - 0.01).far and Shift(2.0, 1.0).far and not Shift(1.0, 0.99).far


def test_patch_click_lists_the_latents_active_on_that_patch(h):
    img = Image.open(h.atlas.image_path(0)).convert("RGB")
    _, _, _, _, data = h.inspect(img)
    patches = h.inspector.run(img)["patches"]
    grid = int(round(math.sqrt(patches.shape[0])))
    assert data["grid"] == grid
    row, col = grid - 1, 1
    md = h.patch_view(data, (col + 0.5) * 336 / grid, (row + 0.5) * 336 / grid)
    values = patches[row * grid + col]
    expected = [int(i) for i in np.argsort(-values, kind="stable")[:10] if values[i] > 0]
    assert f"row {row + 1}, column {col + 1}" in md
    assert [int(part.split("latent=")[1].split(")")[0]) for part in md.split(" · ")] == expected
    assert "colour scale" in h.patch_view(data, 10, 350)


def test_feature_icons_are_made_once_and_cached(h):
    k = h.steer_atlas
    j = h.landing(k.name)[1]
    (h.icons.cache / f"{j}.png").unlink(missing_ok=True)  # the shared app data: another test may have made it
    calls = []
    real = h.steerer.decode
    h.steerer.decode = lambda *a, **kw: calls.append(1) or real(*a, **kw)
    try:
        first = h.icon(k.name, j)
        again = h.icon(k.name, j)
    finally:
        del h.steerer.decode
    assert first == again and len(calls) == 1 and Image.open(first).size == (64, 64)
    assert h.icon(k.name, K_LATENTS - 1) is None and h.icon(h.atlas.name, j) is None


def test_clipsae_icons_precomputes_icons_the_app_then_uses(h, tmp_path):
    import json
    import shutil

    from app.cli import main
    from app.icons import IconSpec, IconStore

    katlas = tmp_path / "katlas"
    shutil.copytree(h.steer_atlas.path, katlas)
    assert (
        main(
            [
                "icons",
                str(katlas),
                "--tiny-kandinsky",
                "--size",
                "64",
                "--steps",
                "2",
                "--latents",
                "3,5",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    header = json.loads((katlas / "icons" / "icons.json").read_text())
    assert header["format"] == "clipsae-icons" and header["sae_sha256"] == h.steer_atlas.manifest["sae_sha256"]
    doc = (Path(__file__).resolve().parents[1] / "app" / "ICONS.md").read_text()
    types = {"str": str, "int": int, "bool": bool, "float": float}
    table = {m[0]: types[m[1]] for m in re.findall(r"^\| `(\w+)` \| (\w+) \|", doc, re.M)}
    assert table.keys() == header.keys() and all(isinstance(header[k], t) for k, t in table.items())
    assert sorted(p.name for p in (katlas / "icons").glob("*.png")) == ["3.png", "5.png"]
    from app.atlas import Atlas

    store = IconStore(Atlas(katlas), h.steerer, tmp_path / "cache", IconSpec())
    assert store.lookup(3) == katlas / "icons" / "3.png" and store.lookup(4) is None
    header["sae_sha256"] = "0" * 64  # icons of another SAE are not shown
    (katlas / "icons" / "icons.json").write_text(json.dumps(header))
    assert IconStore(Atlas(katlas), h.steerer, tmp_path / "cache", IconSpec()).lookup(3) is None


def test_python_m_app_builds_a_module_level_demo_without_launching(h, monkeypatch):
    import importlib
    import sys

    import gradio as gr

    monkeypatch.setenv("CLIPSAE_ATLAS", str(h.atlas.path))
    monkeypatch.setenv("CLIPSAE_DEVICE", "cpu")
    monkeypatch.delenv("CLIPSAE_STEER_ATLAS", raising=False)
    sys.modules.pop("app.__main__", None)
    module = importlib.import_module("app.__main__")
    try:
        assert isinstance(module.demo, gr.Blocks) and not module.demo.is_running
        assert module.handlers.atlas.path == h.atlas.path and module.handlers.steerer is None
    finally:
        sys.modules.pop("app.__main__", None)


def test_timings_label_measured_and_estimated_sizes_and_pick_the_device_defaults(h):
    from app.timing import Timings, measure

    t = Timings(
        device="cpu",
        per_step_s={64: 0.1, 128: 0.4, 256: 1.6},
        fixed_s={64: 0.2, 128: 0.8, 256: 3.2},
        measured={64, 128},
    )
    assert t.default_steps == 10 and t.seconds(64, 10) == pytest.approx(1.2)
    assert t.label(64, 10) == "64 px · ~1.2 s per image"
    assert t.label(256, 10) == "256 px · ≥ 19 s per image (estimated)"  # not measured: a lower bound
    assert t.default_size() == 64  # 128 px takes 4.8 s > 3 s
    assert Timings(device="cuda", per_step_s={512: 0.05}, fixed_s={512: 0.3}, measured={512}).default_size() == 512
    measured = measure(h.steerer, "cpu", budget_s=0.5)
    assert 64 in measured.measured and all(measured.per_step_s[r] > 0 for r in (64, 128, 256, 512, 768))
    big = max(measured.per_step_s)
    assert (
        big not in measured.measured and measured.per_step_s[big] >= measured.per_step_s[64] * (big / 64) ** 2 * 0.999
    )
    assert h.generation_params(0, None, None)[1:] == (10, 64)  # no timings in this fixture: the CPU defaults


def test_generated_images_are_shown_large_enough_to_compare(h):
    view = h.generate_view("a red boat", None, **STEPS, edits=[])
    assert view.original.size == (256, 256)  # 64 px upscaled ×4, nearest neighbour: pixels stay visible
    assert np.array_equal(
        np.asarray(view.original)[::4, ::4],
        np.asarray(h.steerer.steer("a red boat", [], seed=1, steps=2, size=64, prior_steps=2)[0]),
    )


def test_messages_are_escaped_and_printed_without_a_traceback():
    import gradio as gr

    from app.ui_common import guard

    def bogus():
        raise ValueError("Value: 'bogus' (type: <class 'str'>)")

    with pytest.raises(gr.Error) as err:
        guard(bogus)()
    assert err.value.message == "Value: 'bogus' (type: &lt;class 'str'&gt;)"
    assert err.value.print_exception is False

    def broken():
        raise KeyError("/srv/secret/path")

    with pytest.raises(gr.Error) as err:
        guard(broken)()
    assert "/srv" not in err.value.message and "server log" in err.value.message


def test_the_causal_check_reads_the_latents_of_both_images_re_encoded(h):
    from app.readout import causal_check

    s = h.steerer
    j = h.landing(h.steer_atlas.name)[1]
    gen = s.generate("a red boat", [Edit(j, "add", 50.0)], seed=1, steps=2, size=64, prior_steps=2)
    checks = causal_check(s, gen, [j, j])
    assert [c.latent for c in checks] == [j]
    prior = s.pipes.prior
    with torch.no_grad():
        for image, value in ((gen.original, checks[0].original), (gen.steered, checks[0].steered)):
            pixels = prior.image_processor(images=[image], return_tensors="pt").pixel_values
            emb = prior.image_encoder(pixels).image_embeds
            assert float(s.sae.encode(emb.float())[0, j]) == pytest.approx(value, rel=1e-4, abs=1e-6)


def test_the_readout_says_when_an_edit_cannot_change_much(h):
    s = h.steerer
    x, _ = s.prior_embeds("a red boat", 1, 2)
    f = s.latents(x)
    active, inactive = int(f.argmax()), int((f == 0).nonzero()[0])
    view = h.generate_view(
        "a red boat", None, **STEPS, edits=[Edit(inactive, "multiply", 3.0), Edit(active, "set", float(f[active]))]
    )
    assert f"latent {inactive} × 3" in view.readout and "inactive here: × does nothing" in view.readout
    assert "already about that value here" in view.readout


def test_a_dead_latents_page_says_so_and_offers_nothing_to_steer(h):
    k = h.steer_atlas
    dead = K_LATENTS - 1
    view = h.page_view(k.name, dead)
    assert "**Dead**" in view.header and view.bands == [] and view.gallery == [] and not view.steerable
    assert "r=0.00" not in view.header and "Co-activates" not in view.header  # no meaningless r = 0 links
    assert dead not in [
        int(c.split()[0]) for lat in range(h.atlas.n_latents) for c in h.linked_choices(lat, h.atlas.name)
    ]


@pytest.mark.parametrize("log_counts", [False, True])
def test_histogram_bars_are_proportional_to_the_counts(tmp_path, log_counts):
    from app.render import histogram_png

    counts = np.zeros(50)
    counts[5], counts[20] = 10, 5
    rgb = np.asarray(Image.open(histogram_png(tmp_path / "h.png", counts, 0.5, log_counts)).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 120) & (rgb[..., 2] < 100)
    left, right = 54, rgb.shape[1] - 14
    heights = [int(red[:, int(left + (b + 0.5) / 50 * (right - left))].sum()) for b in (5, 20, 30)]
    expected = np.log10(6) / np.log10(11) if log_counts else 0.5
    assert heights[2] == 0 and heights[1] / heights[0] == pytest.approx(expected, abs=0.02)


def test_inspect_opens_on_a_latent_active_on_patches_and_reads_hash_n(h):
    """The heat map's default latent is the most active one that fires on a patch (computed
    here from the inspector's own numbers); "#N" picks dataset image N as captions write it;
    an upload beside an index is inspected and the page says the index was not used."""
    img = Image.open(h.atlas.image_path(1)).convert("RGB")
    res = h.inspector.run(img)
    on_patches = [s for s, _ in res["top"] if res["patches"][:, s].max() > 0]
    _, heat, _, _, data = h.inspect(None, None, "#1")
    assert data["latent"] == on_patches[0] and heat is not None
    assert data["top"] == res["top"]  # the same image as the upload of image 1
    table, *_ = h.inspect(img, None, "3")
    assert "the upload is inspected" in table.splitlines()[0]
    assert "the upload is inspected" not in h.inspect(img)[0]


def test_a_refusal_quoting_a_huge_input_is_logged_capped(caplog):
    from app.ui_common import guard

    def refuse(text):
        raise ValueError(f"no latent matches {text!r}")

    with caplog.at_level("INFO", logger="app.ui_common"), pytest.raises(gr.Error):
        guard(refuse)("x" * 100_000)
    [record] = [r for r in caplog.records if r.name == "app.ui_common"]
    assert 300 <= len(record.getMessage()) < 400
