"""Issue 22, points 3-5 as plain handlers (no server): a latent's text side (checked against
a brute-force ranking of the text tower's own embeddings), Inspect's in-place exploration,
lists of latents with notes (CSV/JSON round trips, refused files), and tables as CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from app.server import make_handlers
from app.text_side import TEMPLATE, compute, rank_sides, vocabulary
from app_fixtures import build_app_data


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    atlas, katlas = build_app_data(tmp_path_factory.mktemp("explore"))
    handlers, _ = make_handlers(atlas, katlas, tiny_kandinsky=True, device="cpu", measure_timings=False)
    handlers.text_sides[handlers.atlas.name].get(wait=120)
    return handlers


# ---------------------------------------------------------------- text side
def test_rank_sides_matches_a_full_sort():
    rng = np.random.default_rng(0)
    dirs, text = rng.normal(size=(7, 5)), rng.normal(size=(30, 5))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    top, top_cos, bottom, bottom_cos = rank_sides(dirs, text, n=4)
    cos = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)) @ text.T
    full = np.argsort(-cos, axis=1)
    assert (top == full[:, :4]).all() and (bottom == full[:, ::-1][:, :4]).all()
    np.testing.assert_allclose(top_cos, np.take_along_axis(cos, full[:, :4], axis=1), rtol=1e-5)


def test_text_side_is_the_vocabulary_nearest_and_farthest_from_the_decoder_direction(h):
    a, ins = h.atlas, h.inspector
    latent = h.landing()[1]
    side = h.text_side(latent)
    words, texts = vocabulary(a)
    assert len(words) > 1000 and len(side["top"]) == len(side["bottom"]) == 8
    # independently: embed every prompt, cosine with the unit decoder row, full sort
    emb = ins.encoder.text_embeddings([TEMPLATE.format(w) for w in words] + texts).numpy()
    d = ins.sae.W_dec[latent].detach().numpy()
    cos = emb @ (d / np.linalg.norm(d))
    entries = words + texts
    assert side["top"][0]["text"] == entries[int(np.argmax(cos))]
    assert side["bottom"][0]["text"] == entries[int(np.argmin(cos))]
    assert side["top"][0]["cos"] == pytest.approx(cos.max(), abs=1e-4)
    assert [e["cos"] for e in side["top"]] == sorted((e["cos"] for e in side["top"]), reverse=True)
    v = h.page_view("", latent)
    assert "Text side" in v.header and side["top"][0]["text"] in v.header
    assert v.data["text_side"] == side


def test_text_side_is_read_back_from_its_cache_without_the_text_tower(h, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("the text tower ran again")
    monkeypatch.setattr(h.inspector.encoder, "text_embeddings", refuse)
    again = compute(h.atlas, h.inspector, h.render.root)
    first = h.text_sides[h.atlas.name].get()
    assert (again.top_ids == first.top_ids).all() and again.entries == first.entries


def test_search_finds_a_latent_by_a_word_of_its_text_side(h):
    latent = h.landing()[1]
    word = h.text_side(latent)["top"][0]["text"]
    assert latent in [row[0] for row in h.search(word)]


def test_the_steering_atlas_has_no_text_side(h):
    assert h.text_side(0, h.steer_atlas.name) == {}
    assert "Text side" not in h.page_view(h.steer_atlas.name, 0).header
