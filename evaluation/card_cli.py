"""`clipsae eval card` and `clipsae eval compare` (registered by evaluation/cli.py); their
flags come from CardConfig and CompareConfig, so they mean what the same flags mean in every
other command (--device, --batch-size, --block-mb, --seed, --out, --score, ...)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_card_commands(ev: argparse._SubParsersAction) -> None:
    """The `card` and `compare` subcommands of `clipsae eval`."""
    from sae_core.cliargs import add_config_flags

    from .configs import CardConfig, CompareConfig

    p = ev.add_parser(
        "card",
        help="the scorecard of an SAE: reconstruction, sparsity, probing, monosemanticity, "
        "localisation, stability, label quality (card.json + card.md)",
        description="Every quality axis the inputs allow, in one versioned card.json "
        "(docs/scorecard.md), "
        "card.md and latents.csv; with --atlas the per-latent scores go into the atlas.",
    )
    add_config_flags(p, CardConfig)
    p.set_defaults(func=_run_card)
    c = ev.add_parser(
        "compare",
        help="several SAEs' cards side by side + the L0–EV frontier plot",
        description="One table of the cards' headline numbers (compare.md / .csv / .json) and "
        "frontier.png, one point per SAE.",
    )
    add_config_flags(c, CompareConfig)
    c.set_defaults(func=_run_compare)


def _run_card(a: argparse.Namespace) -> int:
    from sae_core.cliargs import config_from_args

    from .card import card_main
    from .configs import CardConfig
    from .card_io import card_markdown

    cfg = config_from_args(CardConfig, a)
    card = card_main(cfg)
    print(card_markdown(card))
    where = f"; per-latent scores written into {cfg.atlas}/scores/" if cfg.atlas else ""
    print(f"wrote {Path(cfg.out) / 'card.json'}, card.md, latents.csv{where}")
    return 0


def _run_compare(a: argparse.Namespace) -> int:
    from sae_core.cliargs import config_from_args

    from .card_compare import compare_main
    from .configs import CompareConfig

    cfg = config_from_args(CompareConfig, a)
    print(compare_main(cfg))
    print(f"\nwrote {Path(cfg.out) / 'compare'}.md, .csv, .json and frontier.png")
    return 0
