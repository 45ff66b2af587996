"""`clipsae interpret`: seed 001's recipe, the BLIP captioner (a tiny random one, loaded back
through the same from_pretrained path as real weights), the two files, and the app's use of them."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from app.atlas import Atlas
from helpers import build_tiny_clip_atlas
from precompute.captioner import captioner_source, load_captioner, make_tiny_captioner
from precompute.hub_ids import BLIP_CAPTIONER
from precompute.interpret import (
    CSV_FILE,
    JSON_FILE,
    NO_PATTERN,
    InterpretConfig,
    distinct_top_images,
    interpret,
    keywords,
    read_interpretations,
    sentence,
    write_interpretations,
)
from precompute.selection import parse_latents


@pytest.fixture(scope="module")
def tiny_atlas(tmp_path_factory):
    d = tmp_path_factory.mktemp("interp")
    return build_tiny_clip_atlas(d, n_images=12, d_sae=24, k=6)


@pytest.fixture(scope="module")
def captioner():
    return load_captioner("tiny", "cpu")


class Counting:
    """A captioner wrapper that counts the images it is asked to caption."""

    def __init__(self, inner):
        self.inner, self.n = inner, 0
        self.tiny, self.description = inner.tiny, inner.description

    def caption(self, images):
        self.n += len(images)
        return self.inner.caption(images)


# ---------------------------------------------------------------------------- the recipe
def test_keywords_count_captions_drop_stop_words_short_tokens_and_blip_artefacts():
    captions = [
        "a man riding a horse on the beach",
        "two men and a horse on a beach at sunset",
        "arafed man walking his dog on the beach beach beach",
        "an ox in a field",
    ]
    # by hand: beach is in 3 captions (5 times); man and horse in 2 each (man first seen);
    # then the one-caption words in order of appearance; "ox" is too short, "arafed" is BLIP noise
    assert keywords(captions) == [("beach", 3), ("man", 2), ("horse", 2), ("riding", 1), ("men", 1)]
    assert (
        sentence(keywords(captions)) == "This feature activates on images containing: beach, man, horse, riding, men."
    )


def test_no_shared_word_or_no_caption_is_no_clear_pattern():
    assert sentence(keywords(["a red car", "a blue boat"])) == NO_PATTERN
    assert sentence(keywords([])) == NO_PATTERN
    assert sentence(keywords(["the cat", "a cat"])) == "This feature activates on images containing: cat."


def test_distinct_top_images_skip_empty_slots_and_repeated_content():
    ids = ["a.png#111", "b.png#222", "copy_of_a.png#111", "c.png#333"]
    assert distinct_top_images(np.array([2, -1, 0, 1, 3]), ids, 3) == [2, 1, 3]
    assert distinct_top_images(np.array([-1, -1]), ids, 8) == []


@pytest.mark.parametrize(
    "text, count, ids",
    [
        ("300", 300, None),
        ("12,40,7", None, (12, 40, 7)),
        ("7,", None, (7,)),
        ("0-3, 9", None, (0, 1, 2, 3, 9)),
        ("", None, None),
    ],
)
def test_latents_grammar(text, count, ids):
    sel = parse_latents(text)
    assert (sel.count, sel.ids) == (count, ids)


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "5-2", "1,x", ","])
def test_bad_latents_are_refused_naming_the_flag(bad):
    with pytest.raises(ValueError, match="--latents"):
        parse_latents(bad)


def test_latent_ids_out_of_range_are_refused():
    with pytest.raises(ValueError, match="out of range.*0..9"):
        parse_latents("3,12").resolve(10)
    assert parse_latents("2").resolve(5, ranking=[4, 3, 2, 1, 0]) == [4, 3]


# ---------------------------------------------------------------------------- the captioner
def test_tiny_captioner_is_a_real_blip_folder_loaded_like_real_weights(tmp_path, captioner):
    folder = make_tiny_captioner(tmp_path / "blip", seed=0)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"} <= names
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["BlipForConditionalGeneration"]
    from_folder = load_captioner(str(folder), "cpu")  # `--captioner DIR`: the path real weights take
    assert not from_folder.tiny and captioner.tiny and "RANDOM" in captioner.description
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (40 + 9 * i, 50, 3), dtype=np.uint8)) for i in range(4)]
    texts = captioner.caption(images)
    assert texts == from_folder.caption(images)  # same seed, same weights, same captions
    assert len(set(texts)) > 1, "captions should depend on the image"
    vocab = set((folder / "tokenizer.json").read_text().split('"'))
    assert all(w in vocab for t in texts for w in t.split())


def test_no_captioner_available_names_the_flag(tmp_path):
    if captioner_source(BLIP_CAPTIONER) is not None:
        pytest.skip(f"{BLIP_CAPTIONER} is in this machine's Hugging Face cache")
    for spec in (BLIP_CAPTIONER, str(tmp_path / "no_such_folder")):
        with pytest.raises(ValueError, match="--captioner"):
            load_captioner(spec, "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--captioner .*empty"):
        load_captioner(str(tmp_path / "empty"), "cpu")


# ---------------------------------------------------------------------------- the files
def test_interpret_writes_both_files_from_the_top_images(tiny_atlas, captioner):
    cfg = InterpretConfig(atlas=str(tiny_atlas), captioner="tiny", latents="3", images=4, device="cpu")
    res = interpret(cfg, captioner=captioner)
    freq = np.load(tiny_atlas / "frequency.npy")
    assert res.latents == [int(i) for i in np.argsort(-freq, kind="stable")[:3]]  # N = the most frequent
    doc = read_interpretations(tiny_atlas)
    assert doc["format"] == "clipsae-interpretations" and doc["captioner_random_weights"] is True
    topk = np.load(tiny_atlas / "topk_ids.npy")
    table = [json.loads(line) for line in (tiny_atlas / "images.jsonl").read_text().splitlines()]
    for row in doc["latents"]:
        expected = [int(i) for i in topk[row["latent"]] if i >= 0][:4]  # the tiny atlas's images are all distinct
        assert row["images"] == expected and row["image_ids"] == [table[i]["id"] for i in expected]
        assert len(row["captions"]) == len(expected)
        assert row["interpretation"] == sentence(keywords(row["captions"]))
    with open(tiny_atlas / CSV_FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["latent"]) for r in rows] == sorted(res.latents)
    assert [r["interpretation"] for r in rows] == [r["interpretation"] for r in doc["latents"]]


def test_a_second_run_adds_latents_and_reuses_captions(tiny_atlas, captioner):
    interpret(
        InterpretConfig(atlas=str(tiny_atlas), captioner="tiny", latents="2", images=4, device="cpu"),
        captioner=captioner,
    )
    before = {r["latent"]: r for r in read_interpretations(tiny_atlas)["latents"]}
    counting = Counting(captioner)
    interpret(
        InterpretConfig(atlas=str(tiny_atlas), captioner="tiny", latents="0-23", images=4, device="cpu"),
        captioner=counting,
    )
    doc = read_interpretations(tiny_atlas)
    assert [r["latent"] for r in doc["latents"]] == list(range(24))
    seen = {i for r in before.values() for i in r["images"]}
    wanted = {i for r in doc["latents"] for i in r["images"]}
    assert counting.n == len(wanted - seen)  # images captioned before are not captioned again
    for s, r in before.items():
        assert doc["latents"][s]["captions"] == r["captions"]


def test_stale_or_newer_files_are_refused(tiny_atlas, tmp_path):
    doc = json.loads((tiny_atlas / JSON_FILE).read_text())
    (tmp_path / "manifest.json").write_text((tiny_atlas / "manifest.json").read_text())
    (tmp_path / JSON_FILE).write_text(json.dumps({**doc, "sae_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="another SAE"):
        read_interpretations(tmp_path)
    (tmp_path / JSON_FILE).write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        read_interpretations(tmp_path)
    (tmp_path / JSON_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_interpretations(tmp_path)


def test_unreadable_images_are_skipped_and_listed(tmp_path, captioner):
    atlas = build_tiny_clip_atlas(tmp_path, n_images=8, d_sae=12, k=4)
    table = [json.loads(line) for line in (atlas / "images.jsonl").read_text().splitlines()]
    top = int(np.load(atlas / "topk_ids.npy")[int(np.argmax(np.load(atlas / "frequency.npy"))), 0])
    (tmp_path / "imgs" / table[top]["path"]).write_bytes(b"not an image")
    doc = interpret(InterpretConfig(atlas=str(atlas), captioner="tiny", device="cpu"), captioner=captioner).doc
    assert [s["id"] for s in doc["skipped_images"]] == [table[top]["id"]]
    assert all(table[top]["id"] not in r["image_ids"] for r in doc["latents"])
    with pytest.raises(FileNotFoundError, match="--images-root"):
        interpret(
            InterpretConfig(atlas=str(atlas), captioner="tiny", images_root=str(tmp_path / "gone")), captioner=captioner
        )


def test_an_atlas_without_images_is_refused(tmp_path, captioner):
    from precompute.atlas import AtlasConfig, build_atlas
    from sae_core.config import SAEConfig
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    save_sae(SparseAutoencoder(SAEConfig(d_in=4, d_sae=8)), tmp_path / "s")
    build_atlas(AtlasConfig(acts=str(tmp_path / "x.npy"), sae=str(tmp_path / "s"), out=str(tmp_path / "a")))
    with pytest.raises(ValueError, match="no image table"):
        interpret(InterpretConfig(atlas=str(tmp_path / "a"), captioner="tiny"), captioner=captioner)


def test_cli_says_what_captioned_and_refuses_bad_flags(tiny_atlas, capsys):
    from app.cli import main

    assert main(["interpret", str(tiny_atlas), "--captioner", "tiny", "--latents", "5,", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "tiny BLIP with RANDOM weights" in out and "1 latents interpreted" in out
    assert main(["interpret", str(tiny_atlas), "--latents", "x"]) == 2
    assert "--latents 'x'" in capsys.readouterr().err
    assert main(["interpret", str(tiny_atlas), "--images", "0"]) == 2


# ---------------------------------------------------------------------------- the app
def test_app_shows_and_searches_the_sentences(tiny_atlas):
    from app.server import make_handlers

    doc = (
        read_interpretations(tiny_atlas)
        or interpret(  # its own file whatever ran before
            InterpretConfig(atlas=str(tiny_atlas), captioner="tiny", latents="1,"),
            captioner=load_captioner("tiny", "cpu"),
        ).doc
    )
    live = [int(i) for i in np.flatnonzero(Atlas(tiny_atlas).frequency > 0)]
    a, b, quiet = live[0], live[1], live[2]  # the app searches live latents only
    doc["latents"] = [
        {"latent": s, "interpretation": NO_PATTERN, "keywords": [], "captions": [], "images": [], "image_ids": []}
        for s in range(24)
    ]
    doc["latents"][a].update(
        interpretation="This feature activates on images containing: beach, dog.",
        keywords=[["beach", 3], ["dog", 2]],
        captions=["a dog on a beach"] * 3,
    )
    doc["latents"][b].update(
        interpretation="This feature activates on images containing: dog, park.",
        keywords=[["dog", 4], ["park", 2]],
        captions=["a dog in a park"] * 4,
    )
    write_interpretations(tiny_atlas, doc)
    atlas = Atlas(tiny_atlas)
    assert atlas.search_interpretations("dog") == [b, a]  # the best keyword first
    assert atlas.search_interpretations("pattern") == []  # "no clear activating pattern" never matches
    handlers, _ = make_handlers(tiny_atlas, device="cpu")
    header, *_, data = handlers.latent_page(a)
    lines = header.split("\n\n")
    assert lines[0].startswith(f"## Latent {a}\n") and lines[1].startswith(
        "*This feature activates on images containing: beach"
    )
    assert "tiny random BLIP" in lines[1] and data["interpretation"].endswith("beach, dog.")
    assert "This feature" not in handlers.latent_page(quiet)[0]  # nothing captioned: no sentence
    by_label = [i for i in handlers.atlas.search_live("beach") if i != a]  # the random labels may hold "beach"
    assert [row[0] for row in handlers.search("beach")][: len(by_label) + 1] == by_label + [a]  # then the sentences


def test_format_page_documents_every_field(tiny_atlas, captioner):
    from pathlib import Path

    from test_formats import table_fields

    page = Path(__file__).resolve().parents[1] / "precompute/ATLAS.md"
    doc = interpret(InterpretConfig(atlas=str(tiny_atlas), captioner="tiny", latents="1,"), captioner=captioner).doc
    assert set(table_fields(page, "interpretations.json\n")) == set(json.loads((tiny_atlas / JSON_FILE).read_text()))
    assert set(table_fields(page, "interpretations.json rows")) == set(doc["latents"][0])
    assert "interpretations.json" in page.read_text().split("## manifest.json")[0]  # in the tree
