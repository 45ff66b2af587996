"""The `clipsae` command line: every subcommand's flags come from its config dataclass, one flag
means one thing in every subcommand, and `--help` imports no torch."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import build_parser
from sae_core.cliargs import config_from_args

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sae_core", "precompute", "evaluation", "app")


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                inner = _subcommands(sub, path)
                found.update(inner or {path: sub})
    return found


@pytest.fixture(scope="module")
def commands() -> dict[str, argparse.ArgumentParser]:
    return _subcommands(build_parser())


def _flags(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def test_every_flag_of_every_subcommand_comes_from_a_config_dataclass(commands):
    assert {
        "train",
        "metrics",
        "convert",
        "export-sae",
        "embed",
        "export",
        "atlas",
        "link",
        "interpret",
        "eval recon",
        "eval zeroshot",
        "eval probe",
        "eval heatmap",
        "eval segment",
        "eval latents",
        "serve",
        "demo",
        "up",
        "icons",
        "collage",
    } <= commands.keys()
    loose = [
        f"{name}: {a.option_strings or a.dest}"
        for name, p in commands.items()
        for a in _flags(p)
        if not hasattr(a, "config_field")
    ]
    assert not loose, loose
    top = [a for a in _flags(build_parser()) if not hasattr(a, "config_field")]
    assert [a.option_strings for a in top] == [["-v", "--verbose"]]  # the dispatcher's own


def test_no_module_writes_a_flag_by_hand():
    """Flags come from `sae_core.cliargs`; the only hand-written one is the dispatcher's --verbose."""
    hand = [
        f"{p.relative_to(REPO)}:{i}"
        for pkg in PACKAGES
        for p in sorted((REPO / pkg).rglob("*.py"))
        if p.name != "cliargs.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\.add_argument\(", line)
    ]
    assert hand == [
        "app/cli.py:"
        + str(
            next(i for i, line in enumerate((REPO / "app/cli.py").read_text().splitlines(), 1) if '"--verbose"' in line)
        )
    ], hand


def test_flag_defaults_are_the_dataclass_defaults(commands):
    import app.configs
    import evaluation.configs
    import precompute.configs
    import sae_core.config
    import sae_core.interop

    classes = {
        c.__name__: c
        for m in (app.configs, evaluation.configs, precompute.configs, sae_core.config, sae_core.interop)
        for c in vars(m).values()
        if dataclasses.is_dataclass(c)
    }
    for name, p in commands.items():
        for a in _flags(p):
            cls, field_name = a.config_field.split(".")
            f = next(f for f in dataclasses.fields(classes[cls]) if f.name == field_name)
            if a.required or not a.option_strings:
                assert f.default is dataclasses.MISSING, (name, a.dest)
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if (name, a.dest) == ("train", "normalize_activations"):  # unset: by architecture (config.TRAIN_NORMALIZE)
                assert a.default is None and f.default == "none"
                continue
            assert a.default == default, (name, a.dest)


def test_one_flag_means_one_thing_in_every_subcommand(commands):
    """The same flag has the same type (a list of it at most), compatible choices and, for
    --device, the same words everywhere; a flag that meant two things got a new name in one
    command and reads its old one there (action.older_flags)."""
    seen: dict[str, list[tuple[str, argparse.Action]]] = {}
    for name, p in commands.items():
        for a in _flags(p):
            for flag in a.option_strings:
                if flag not in a.older_flags and not flag.startswith("--no-"):
                    seen.setdefault(flag, []).append((name, a))
    clashes = []
    for flag, uses in seen.items():
        kinds = {
            "bool"
            if isinstance(a, argparse.BooleanOptionalAction)
            else re.sub(r" list$", "", getattr(a.type, "__name__", "str"))
            for _, a in uses
        }
        choices = sorted((set(a.choices) for _, a in uses if a.choices), key=len)
        nested = all(small <= big for small, big in zip(choices, choices[1:]))
        if len(kinds) > 1 or not nested:
            clashes.append(f"{flag}: " + ", ".join(f"{n} {a.type} {a.choices}" for n, a in uses))
    assert not clashes, clashes
    assert len({a.help for _, a in seen["--device"]}) == 1 and len(seen["--device"]) >= 10


def test_renamed_flags_read_their_older_names_too(commands):
    parser = build_parser()
    for new, old, argv, dest in (
        ("--images-per-latent", "--images", ["interpret", "atlas_dir"], "images"),
        ("--class-names", "--classes", ["eval", "zeroshot", "--dataset", "d", "--sae", "s"], "classes"),
        ("--class-folders", "--labels", ["eval", "latents", "--atlas", "a"], "labels"),
    ):
        assert getattr(parser.parse_args([*argv, new, "3"]), dest) == getattr(
            parser.parse_args([*argv, old, "3"]), dest
        )
    assert parser.parse_args(["atlas", "--acts", "a", "--sae", "s", "--out", "o", "--no-labels"]).labels is False


def test_configs_come_back_from_the_flags():
    from evaluation.configs import HeatmapConfig, ReconConfig
    from precompute.configs import EmbedConfig
    from sae_core.config import SweepConfig

    parser = build_parser()
    cfg = config_from_args(
        EmbedConfig,
        parser.parse_args(
            ["embed", "--images", "i", "--out", "o", "--hook", "blocks.3.hook_resid_post", "--tokens", "all"]
        ),
    )
    assert (cfg.encoder.hook, cfg.encoder.tokens, cfg.images) == ("blocks.3.resid_post", "all", "i")
    cfg = config_from_args(ReconConfig, parser.parse_args(["eval", "recon", "--acts", "x", "--sae", "a", "b"]))
    assert cfg.sae == ("a", "b") and cfg.batch_size == 8192
    cfg = config_from_args(
        HeatmapConfig,
        parser.parse_args(
            ["eval", "heatmap", "--image", "i", "--text", "t", "--sae", "s", "--latent", "4", "7", "--hook", "embed"]
        ),
    )
    assert cfg.latent == (4, 7) and cfg.clip.hook == "embed" and cfg.clip.device == "auto"
    sweep = config_from_args(
        SweepConfig,
        parser.parse_args(
            ["train", "--acts", "x", "--out", "o", "--d-sae", "8", "--arch", "topk", "--k", "2,4", "--resume"]
        ),
    )
    assert sweep.values("topk") == ([2, 4], [0.0]) and sweep.resume
    with pytest.raises(ValueError, match="--l1 is for relu/jumprelu"):
        SweepConfig("x", "o", k=(2,), l1=(0.1,)).values("topk")
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--acts", "x", "--out", "o", "--d-sae", "8", "--k", "2,x"])


def test_help_imports_no_torch():
    """`clipsae --help` and every `clipsae X --help` build their parser from torch-free config
    modules (one fresh interpreter for all of them)."""
    code = (
        "import contextlib, io, sys\n"
        "from app.cli import build_parser, main\n"
        "def names(p, pre=()):\n"
        "    for a in p._actions:\n"
        "        for n, s in getattr(a, 'choices', None).items() if hasattr(a, '_name_parser_map') else ():\n"
        "            yield from (names(s, (*pre, n)) if any(hasattr(b, '_name_parser_map') for b in s._actions)"
        " else [(*pre, n)])\n"
        "cmds = [[]] + [list(c) for c in names(build_parser())]\n"
        "for c in cmds:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        main([*c, '--help'])\n"
        "    assert 'usage: clipsae' in out.getvalue(), c\n"
        "heavy = sorted(m for m in ('torch', 'gradio', 'open_clip', 'diffusers', 'transformers') if m in sys.modules)\n"
        "print(len(cmds), heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    count, heavy = res.stdout.split(" ", 1)
    assert int(count) >= 21 and heavy.strip() == "[]"
