"""The README's commands run as written: its five-command pipeline (embed → train → atlas →
interpret → serve) on a few images with a tiny OpenCLIP model, a tiny SAE and the tiny BLIP.
Only the sizes and the weights are substituted (each substitution must find its text, so a
changed README fails here); the commands go through `clipsae`'s own entry point, in process.
(Its Python example runs in tests/test_api.py.) Every relative link of the README and docs/
resolves."""

from __future__ import annotations

import re
import shlex
import urllib.request
from pathlib import Path

import pytest

from app_fixtures import free_port
from helpers import write_images, write_tiny_clip_config

REPO = Path(__file__).resolve().parents[1]


def _block(heading: str, lang: str) -> str:
    """The first ```lang block under the README's `## heading`."""
    readme = (REPO / "README.md").read_text()
    section = readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def _substitute(text: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run the README's pipeline block in a fresh folder; returns (folder, the serve result)."""
    import app.server
    from app.cli import main

    root = tmp_path_factory.mktemp("readme")
    write_images(root / "photos", 12, seed=5, size=(56, 40))
    (root / "vocab.txt").write_text("\n".join(["dog", "cat", "boat", "tree", "car", "sky", "house", "bird"]) + "\n")
    block = _substitute(
        _block("On your own images", "bash"),
        [
            (
                "--model ViT-B-32 --pretrained laion2b_s34b_b79k",
                f"--model {write_tiny_clip_config(root)} --pretrained none",
            ),
            ("--d-sae 4096 --k 32", "--d-sae 48 --k 4"),
            ("--captioner Salesforce/blip-image-captioning-base", "--captioner tiny"),
            ("--sae sae/ --out atlas/", f"--sae sae/ --out atlas/ --vocab {root / 'vocab.txt'}"),  # 8 words, not 2,123
        ],
    )
    lines = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert [shlex.split(line)[1] for line in lines] == ["embed", "train", "atlas", "interpret", "serve"]
    launched = []
    real_launch = app.server.launch

    def launch_in_background(demo, host, port, **kwargs):  # the real launch, without blocking the test
        launched.append((real_launch(demo, host, port, **{**kwargs, "prevent_thread_lock": True}), host, port))
        return launched[-1][0]

    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.setattr(app.server, "launch", launch_in_background)
    port = free_port()
    try:
        for line in lines:
            argv = shlex.split(line)[1:] + (["--port", str(port)] if line.startswith("clipsae serve") else [])
            assert main(argv) == 0, line
        yield root, launched
    finally:
        for demo, *_ in launched:
            demo.close()
        mp.undo()


def test_the_readme_pipeline_runs_and_serves_its_atlas(pipeline):
    root, launched = pipeline
    assert (root / "sae" / "cfg.json").is_file() and (root / "atlas" / "manifest.json").is_file()
    assert (root / "atlas" / "interpretations.json").is_file()
    ((_, host, port),) = launched
    assert host == "127.0.0.1"
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=60) as r:
        assert r.status == 200


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_relative_link_of_the_readme_and_docs_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(pages) > 5
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name}: {target}"
            if anchor and dest.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", dest.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page.name}: {target}"
    size = (REPO / "docs" / "img" / "app.png").stat().st_size
    assert size <= 150 * 1024, size  # the README's screenshot stays small
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def _subparser(parser, words: list[str]):
    """The argparse parser of `clipsae WORDS…` (e.g. ["eval", "zeroshot"])."""
    import argparse

    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def test_every_flag_in_the_cli_reference_exists():
    from app.cli import build_parser

    doc = (REPO / "docs" / "pipeline.md").read_text()
    rows = re.findall(r"^\| `clipsae ([a-z\- ]+?)(?= [A-Z\[(-]|`)(.*?)`", doc, re.M)
    assert len(rows) == doc.count("\n| `clipsae ")
    root = build_parser()
    for words, rest in rows:
        parser = _subparser(root, words.split())
        known = {s for a in parser._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
            assert flag in known, f"clipsae {words}: {flag} is not one of its flags"
