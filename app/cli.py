"""`clipsae`: one command, one subcommand per stage (`clipsae --help` lists them).

This is the top of the pipeline, so it may import every stage: each stage exposes its own
subcommands (`sae_core.cli`, `precompute.cli`, `evaluation.cli`) and the app adds its own
(serve, demo, up, icons, collage). Every subcommand's flags are the fields of its config
dataclass (each stage's `configs.py`, turned into flags by `sae_core.cliargs`), and building
the parser imports no torch, so `clipsae --help` is quick. Every expected user error is one
line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from evaluation.cli import COMMANDS as EVAL_COMMANDS
from precompute.cli import COMMANDS as PRECOMPUTE_COMMANDS
from sae_core.cli import COMMANDS as SAE_COMMANDS
from sae_core.cliargs import add_config_flags, config_from_args, run_reporting

from .configs import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    CollageConfig,
    DemoConfig,
    IconsConfig,
    KandinskyOptions,
    PasswdConfig,
    ServeConfig,
    UpConfig,
)

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ServeConfig",
    "DemoConfig",
    "UpConfig",
    "IconsConfig",
    "build_parser",
    "main",
    "run_demo",
]


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the app: browse an atlas, inspect images, steer Kandinsky 2.2")
    add_config_flags(p, ServeConfig)
    add_config_flags(p, KandinskyOptions)
    p.set_defaults(func=_run_serve)


def _run_serve(a: argparse.Namespace) -> int:
    from .server import serve

    c = config_from_args(ServeConfig, a)
    serve(
        c.atlas,
        c.steer_atlas,
        host=c.host,
        port=c.port,
        share=c.share,
        prior=c.prior,
        decoder=c.decoder,
        tiny_kandinsky=c.tiny_kandinsky,
        device=c.device,
        images_root=c.images_root,
        kandinsky=config_from_args(KandinskyOptions, a),
        auth_file=c.auth_file,
        announce=f"serving {c.atlas} on http://{c.host}:{c.port}",
    )
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build (once) and serve the embedded demo: bundled photos, CLIP, SAEs, Kandinsky")
    add_config_flags(p, DemoConfig)
    p.set_defaults(func=_run_demo)


def run_demo(c: DemoConfig) -> int:
    """Build the demo (once), print its report, then serve it unless told not to."""
    from .auth import read_auth_file
    from .demo import demo_main, read_demo_info
    from .server import check_port, serve

    if c.serve:
        check_port(c.host, c.port)  # before the build, not after it
        if c.auth_file:
            read_auth_file(c.auth_file)
    print(demo_main(c.cache_dir, rebuild=c.rebuild, device=c.device))
    if not c.serve:
        return 0
    info = read_demo_info(c.cache_dir)
    serve(
        info["clip_atlas"],
        info["kandinsky_atlas"],
        host=c.host,
        port=c.port,
        tiny_kandinsky=info["kandinsky"] == "tiny",
        device=c.device,
        auth_file=c.auth_file,
        announce=f"serving the demo on http://{c.host}:{c.port} (Ctrl-C to stop)",
    )
    return 0


def _run_demo(a: argparse.Namespace) -> int:
    return run_demo(config_from_args(DemoConfig, a))


def _add_up(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up",
        help="serve the atlas mounted at DATA/atlas (+ DATA/katlas), or the demo if none",
        description="The container's command: DATA/atlas/manifest.json present -> clipsae serve "
        "(with DATA/katlas as the steering atlas and DATA/images as the images root when "
        "present); absent -> clipsae demo.",
    )
    add_config_flags(p, UpConfig)
    p.set_defaults(func=_run_up)


def _run_up(a: argparse.Namespace) -> int:
    from pathlib import Path

    c = config_from_args(UpConfig, a)
    data = Path(c.data)
    if (data / "atlas" / "manifest.json").is_file():
        from .server import serve

        steer = data / "katlas" if (data / "katlas" / "manifest.json").is_file() else None
        images = c.images_root or (str(data / "images") if (data / "images").is_dir() else None)
        serve(
            str(data / "atlas"),
            str(steer) if steer else None,
            host=c.host,
            port=c.port,
            device=c.device,
            images_root=images,
            auth_file=c.auth_file,
            announce=f"serving {data / 'atlas'} on http://{c.host}:{c.port}"
            + (f" with steering atlas {steer}" if steer else " (no steering atlas)")
            + (f", images from {images}" if images else ""),
        )
        return 0
    print(f"no atlas at {data / 'atlas'}: serving the embedded demo")
    return run_demo(DemoConfig(cache_dir=c.cache_dir, host=c.host, port=c.port, device=c.device, auth_file=c.auth_file))


def _add_passwd(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "passwd",
        help="add a user to an auth file for --auth-file (or change their password)",
        description="Reads the password from the terminal (asked twice) or from stdin's first line; "
        "never from the command line. The file holds salted PBKDF2 hashes (app/auth.py).",
    )
    add_config_flags(p, PasswdConfig)
    p.set_defaults(func=_run_passwd)


def _run_passwd(a: argparse.Namespace) -> int:
    from .auth import read_new_password, set_password

    c = config_from_args(PasswdConfig, a)
    new = set_password(c.auth_file, c.user, read_new_password())
    print(f"{'added' if new else 'changed the password of'} user {c.user} in {c.auth_file}")
    return 0


def _add_collage(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collage",
        help="one PNG per latent: its top images with patch masks and a caption strip",
        description="Seed 001's collages: each latent's top images in a grid with their patch masks, "
        "values, label / interpretation and frequency.",
    )
    add_config_flags(p, CollageConfig)
    p.set_defaults(func=_run_collage)


def _run_collage(a: argparse.Namespace) -> int:
    from .collage import collage_main

    paths = collage_main(config_from_args(CollageConfig, a))
    print(f"wrote {len(paths)} collages to {a.out}" + (f" ({paths[0].name} …)" if paths else ""))
    return 0


def _add_icons(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("icons", help="precompute feature icons of a steering atlas (KATLAS/icons/), e.g. on a GPU")
    add_config_flags(p, IconsConfig)
    add_config_flags(p, KandinskyOptions)
    p.set_defaults(func=_run_icons)


def _run_icons(a: argparse.Namespace) -> int:
    from .icons import icons_main

    print(icons_main(config_from_args(IconsConfig, a), config_from_args(KandinskyOptions, a)))
    return 0


APP_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_serve,
    _add_demo,
    _add_up,
    _add_icons,
    _add_collage,
    _add_passwd,
]


def build_parser() -> argparse.ArgumentParser:
    """The `clipsae` parser: every stage's subcommands."""
    parser = argparse.ArgumentParser(
        prog="clipsae",
        description="Sparse autoencoders on CLIP: extract activations, train, build an atlas, explore and steer.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in [*SAE_COMMANDS, *PRECOMPUTE_COMMANDS, *EVAL_COMMANDS, *APP_COMMANDS]:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `clipsae` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run_reporting(f"clipsae {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
