"""`clipsae` subcommands of the precompute stage (registered by `sae_core.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _add_embed(sub: argparse._SubParsersAction) -> None:
    from .embed import add_arguments, run

    p = sub.add_parser("embed", help="extract CLIP / Kandinsky-prior activations into a resumable sharded cache",
                       description="Images -> activation cache (fp16 shards + metadata). Re-run the same command to resume.")
    add_arguments(p)
    p.set_defaults(func=run)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a cache's rows as a float32 .npy matrix + one image id per row")
    p.add_argument("cache", help="activation cache folder")
    p.add_argument("--out", required=True, help="X.npy (X.ids.txt is written beside it)")
    p.set_defaults(func=_run_export)


def _run_export(a: argparse.Namespace) -> int:
    from .cache import export

    path = export(a.cache, a.out)
    print(f"wrote {path} and {path.with_suffix('.ids.txt')}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build (once) and report the embedded demo: bundled photos, CLIP, an SAE")
    p.add_argument("--cache-dir", default="demo_cache", help="where the demo is built and cached")
    p.add_argument("--rebuild", action="store_true", help="delete the cached demo and build it again")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_run_demo)


def _run_demo(a: argparse.Namespace) -> int:
    from .demo import demo_main

    print(demo_main(a.cache_dir, rebuild=a.rebuild, device=a.device))
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_embed, _add_export, _add_demo]
