"""Issue 22, points 3-5 as plain handlers (no server): a latent's text side (checked against
a brute-force ranking of the text tower's own embeddings), Inspect's in-place exploration,
lists of latents with notes (CSV/JSON round trips, refused files), and tables as CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

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
    rows = {row[0]: row for row in h.search(word)}
    assert latent in rows and rows[latent][1].startswith(f"≈ {word}")  # unlabelled: the text side in the list


def test_the_steering_atlas_has_no_text_side(h):
    assert h.text_side(0, h.steer_atlas.name) == {}
    assert "Text side" not in h.page_view(h.steer_atlas.name, 0).header


# ---------------------------------------------------------------- Inspect explores in place
def test_explore_redraws_one_latents_heat_map_beside_its_top_images(h):
    from app.explore import latent_choices, patch_at

    _, _, _, _, data = h.inspect(None, None, 3)
    other = data["top"][-1][0]  # not the heat map Inspect opened on
    header, heat, gallery = h.explore(None, f"{other} (0.1)", 3)
    assert f"Exploring latent {other}" in header and f"latent={other}" in header  # a link to Browse stays
    assert heat is not None and heat.width >= 288  # drawn, with its colour scale
    page = h.atlas.page(other)
    assert [c.split(" · ")[0] for _, c in gallery] == [f"{t['value']:.3g}" for t in page.top[:8]]
    # the image's activations are kept: choosing another latent does not re-encode it
    calls = []
    run = h.inspector.run
    h.inspector.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    try:
        h.explore(None, data["top"][0][0], 3)
    finally:
        h.inspector.run = run
    assert calls == []
    choices = latent_choices(data, patch_at(data, 1, 1, 336))
    assert choices[0].startswith(f"{data['top'][0][0]} (") and len(set(choices)) == len(choices)
    with pytest.raises(ValueError, match="whole number"):
        h.explore(None, "x", 3)


# ---------------------------------------------------------------- lists
@pytest.fixture
def check(h):
    from app.lists import checker

    return checker(h.pick)


def test_lists_bookmark_update_remove_and_round_trip_through_json_and_csv(h, check):
    from app import lists as L

    a = h.atlas.name
    lists, msg = L.add({}, "dogs", a, 3, "snouts", check)
    lists, _ = L.add(lists, "dogs", a, "5", "", check)
    lists, msg = L.add(lists, "dogs", a, 3, "snouts, again", check)
    assert "updated" in msg and L.rows(lists) == [["dogs", a, 3, "snouts, again"], ["dogs", a, 5, ""]]
    lists, _ = L.add(lists, "cats, mostly", h.steer_atlas.name, 0, 'a "quoted" note', check)
    for text, name in ((L.to_json(lists), "x.json"), (L.to_csv(lists), "x.csv")):
        assert L.parse(text.encode(), name, check) == lists
    rows = list(csv.reader(L.to_csv(lists).splitlines()))
    assert rows[0] == ["list", "sae", "latent", "note"] and rows[-1][0] == "cats, mostly"
    assert json.loads(L.to_json(lists))["format"] == "clipsae-lists"
    lists, _ = L.remove(lists, "dogs", a, 5, check)
    assert L.rows(lists, "dogs") == [["dogs", a, 3, "snouts, again"]]
    assert L.merge(lists, {"dogs": [{"sae": a, "latent": 9, "note": ""}]})["dogs"][-1]["latent"] == 9


@pytest.mark.parametrize(
    "name,data,why",
    [
        ("l.txt", b"", "import a .json or .csv"),
        ("l.json", b"{", "not valid JSON"),
        ("l.json", b'{"lists": {}}', "not a clipsae lists file"),
        ("l.json", b'{"format": "clipsae-lists", "version": 2, "lists": {}}', "version 2"),
        ("l.csv", b"name,latent\nx,1\n", "missing: list, sae"),
        ("l.csv", b"list,sae,latent\nok,,1\nbad,,2.5\n", "row 3: latent must be a whole number"),
        ("l.csv", b"list,sae,latent\nbad,,99999\n", "row 2: latent 99999 is out of range"),
        ("l.csv", b"list,sae,latent\n,,1\n", "row 2: give the list a name"),
        ("l.csv", b"list,sae,latent\n", "holds no bookmark"),
        ("l.csv", b"\xff\xfe", "not UTF-8"),
    ],
)
def test_import_refuses_a_bad_file_with_one_line(check, name, data, why):
    from app.lists import parse

    with pytest.raises(ValueError, match=why) as err:
        parse(data, name, check)
    assert "\n" not in str(err.value)


def test_a_list_from_another_server_keeps_its_unknown_sae(check):
    from app.lists import parse

    assert parse(b"list,sae,latent,note\nx,their-atlas,7,hi\n", "l.csv", check) == {
        "x": [{"sae": "their-atlas", "latent": 7, "note": "hi"}]
    }


# ---------------------------------------------------------------- tables as CSV
def test_markdown_and_dataframe_tables_become_csv(h):
    from app.tables import frame_rows, markdown_tables, write_csv

    table, *_ = h.inspect(None, None, 3)
    (rows,) = markdown_tables(table)
    assert rows[0] == ["latent", "activation", "label"] and "](" not in "".join(map(str, rows))
    path = write_csv([rows, [["a"], ["=1+1"]]], "inspect latents")
    got = list(csv.reader(open(path, encoding="utf-8")))
    assert got[: len(rows)] == rows and got[-1] == ["'=1+1"]  # no spreadsheet formula
    found = h.search("")
    assert frame_rows(found, ["latent", "label", "fires on (%)", "max"])[1] == found[0]
    assert write_csv([[["latent"]]], "empty") is None


def test_interpretation_texts_join_the_words_and_are_quoted_on_the_page():
    from app.text_side import TextSide

    entries = ["dog", "cat", "a dog on a sofa in a living room with a big window and a lamp"]
    text = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    top, top_cos, bottom, bottom_cos = rank_sides(np.array([[1.0, 0.1]]), text, n=3)
    side = TextSide(entries, 2, top, top_cos, bottom, bottom_cos)
    got = side.of(0)
    assert [e["text"] for e in got["top"]] == ["dog", entries[2], "cat"]
    assert [e["kind"] for e in got["top"]] == ["word", "text", "word"]
    md = side.markdown(0)
    assert "“a dog on a sofa" in md and "…”" in md  # a long text is shortened, in quotes
    assert side.search("sofa") == [0] and side.search("zebra") == []


def test_downloads_reuse_one_file_per_content_and_make_no_folder_per_click():
    from app.tables import export_file, write_csv

    table = [["latent", "label"], [3, "dog"]]
    first, again = write_csv([table], "latents"), write_csv([table], "latents")
    assert first == again and Path(first).name == "latents.csv"
    assert Path(first).read_text(encoding="utf-8") == "latent,label\n3,dog\n"
    other = export_file("x\n", "latents.csv")
    assert other != first and Path(other).parent.parent == Path(first).parent.parent  # one export folder
