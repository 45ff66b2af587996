"""The precompute stage's `clipsae` subcommands: embed, export, atlas, link, interpret.

Each subcommand's flags are the fields of its config dataclass (`precompute/configs.py`,
turned into flags by `sae_core.cliargs`), so a field means the same flag in every command
and `--help` imports no torch. The `clipsae` command itself is assembled in `app/cli.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sae_core.cliargs import add_config_flags, config_from_args

from .configs import AtlasConfig, EmbedConfig, ExportConfig, InterpretConfig, LinkConfig


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="extract CLIP / Kandinsky-prior activations into a resumable sharded cache",
        description="Images -> activation cache (fp16 shards + metadata). Re-run the same command to "
        "resume. Several processes: torchrun --nproc_per_node=N -m precompute.embed …",
    )
    add_config_flags(p, EmbedConfig)
    p.set_defaults(func=_run_embed)


def _run_embed(a: argparse.Namespace) -> int:
    from .embed import run

    return run(a)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a cache's rows as a float32 .npy matrix + one image id per row")
    add_config_flags(p, ExportConfig)
    p.set_defaults(func=_run_export)


def _run_export(a: argparse.Namespace) -> int:
    from .cache import export

    cfg = config_from_args(ExportConfig, a)
    path = export(cfg.cache, cfg.out)
    print(f"wrote {path} and {path.with_suffix('.ids.txt')}")
    return 0


def _add_atlas(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "atlas",
        help="top images per latent, patch masks, stats, labels, faiss indexes",
        description="Build the atlas folder the app browses (written atomically, manifest last). "
        "Several processes: torchrun --nproc_per_node=N -m precompute.atlas …",
    )
    add_config_flags(p, AtlasConfig)
    p.set_defaults(func=_run_atlas)


def _run_atlas(a: argparse.Namespace) -> int:
    from .atlas import build_atlas, summary_line

    m = build_atlas(config_from_args(AtlasConfig, a))
    print(summary_line(m, a.out))
    for note in m["notes"]:
        print(f"  note: {note}")
    return 0


def _add_link(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "link",
        help="for each latent of A, the latents of B that co-activate most (and the reverse)",
        description="Exact Pearson correlations from the two atlases' sparse codes. Several "
        "processes: torchrun --nproc_per_node=N -m precompute.link …",
    )
    add_config_flags(p, LinkConfig)
    p.set_defaults(func=_run_link)


def _run_link(a: argparse.Namespace) -> int:
    from .link import link, summary_line

    cfg = config_from_args(LinkConfig, a)
    print(summary_line(link(cfg.atlas_a, cfg.atlas_b, top=cfg.top_links, budget_mb=cfg.budget_mb, device=cfg.device)))
    return 0


def _add_interpret(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpret",
        help="caption each latent's top images (BLIP) and name it by their keywords",
        description="Seed 001's auto-interpretation: up to --images distinct top images per latent "
        "are captioned; the 5 most frequent content words make the sentence. Writes "
        "interpretations.json and .csv into the atlas.",
    )
    add_config_flags(p, InterpretConfig)
    p.set_defaults(func=_run_interpret)


def _run_interpret(a: argparse.Namespace) -> int:
    from .interpret import CSV_FILE, JSON_FILE, NO_PATTERN, interpret

    cfg = config_from_args(InterpretConfig, a)
    res = interpret(cfg)
    doc, ran = res.doc, set(res.latents)
    named = sum(r["interpretation"] != NO_PATTERN for r in doc["latents"] if r["latent"] in ran)
    print(f"captioner: {doc['captioner_description']}")
    print(
        f"{len(ran)} latents interpreted in {res.seconds:.1f} s ({named} with a pattern, {len(ran) - named} "
        f"without); {cfg.atlas}/{JSON_FILE} and {CSV_FILE} now hold {len(doc['latents'])}"
    )
    if doc["skipped_images"]:
        print(f"  {len(doc['skipped_images'])} images could not be read (listed in {JSON_FILE})")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_embed,
    _add_export,
    _add_atlas,
    _add_link,
    _add_interpret,
]
"""The subcommands of this stage; `app/cli.py` assembles every stage's into `clipsae`."""
