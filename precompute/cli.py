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


def _add_link(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("link", help="for each latent of A, the latents of B that co-activate most (and the reverse)")
    p.add_argument("atlas_a", help="an atlas (e.g. the CLIP one)")
    p.add_argument("atlas_b", help="an atlas of the same images (e.g. the Kandinsky-prior one)")
    p.add_argument("--top", type=int, default=5, help="linked latents kept per latent")
    p.add_argument("--budget-mb", type=float, default=1024, help="memory for the correlation accumulators")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run_link)


def _run_link(a: argparse.Namespace) -> int:
    from .link import link

    r = link(a.atlas_a, a.atlas_b, top=a.top, budget_mb=a.budget_mb, device=a.device)
    print(f"linked {r['a']} <-> {r['b']} over {r['shared_images']} shared images (top {r['top']})")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the app: browse an atlas, inspect images, steer Kandinsky 2.2")
    p.add_argument("--atlas", required=True, help="an atlas folder (clipsae atlas)")
    p.add_argument("--steer-atlas", default=None, help="an atlas of a Kandinsky-prior SAE (enables the Steer tab)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--prior", default="kandinsky-community/kandinsky-2-2-prior", help="hub id or local folder")
    p.add_argument("--decoder", default="kandinsky-community/kandinsky-2-2-decoder", help="hub id or local folder")
    p.add_argument("--tiny-kandinsky", action="store_true", help="tiny random Kandinsky components (CPU demo)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_run_serve)


def _run_serve(a: argparse.Namespace) -> int:
    from app.server import serve

    print(f"serving {a.atlas} on http://{a.host}:{a.port}")
    serve(a.atlas, a.steer_atlas, host=a.host, port=a.port, share=a.share, prior=a.prior, decoder=a.decoder,
          tiny_kandinsky=a.tiny_kandinsky, device=a.device)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build (once) and report the embedded demo: bundled photos, CLIP, an SAE")
    p.add_argument("--cache-dir", default="demo_cache", help="where the demo is built and cached")
    p.add_argument("--rebuild", action="store_true", help="delete the cached demo and build it again")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--no-serve", action="store_true", help="build and report, do not start the app")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_run_demo)


def _run_demo(a: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .demo import demo_main

    print(demo_main(a.cache_dir, rebuild=a.rebuild, device=a.device))
    if a.no_serve:
        return 0
    from app.server import serve

    info = json.loads((Path(a.cache_dir) / "demo.json").read_text())
    print(f"serving the demo on http://{a.host}:{a.port} (Ctrl-C to stop)")
    serve(info["clip_atlas"], info["kandinsky_atlas"], host=a.host, port=a.port,
          tiny_kandinsky=info["kandinsky"] == "tiny", device=a.device)
    return 0


def _add_up(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="serve the atlas mounted at DATA/atlas (+ DATA/katlas), or the demo if none",
                       description="The container's command: DATA/atlas/manifest.json present -> clipsae serve "
                                   "(with DATA/katlas as the steering atlas when present); absent -> clipsae demo.")
    p.add_argument("--data", default="/data", help="folder holding atlas/ (and optionally katlas/)")
    p.add_argument("--cache-dir", default="demo_cache", help="where the demo is built when no atlas is mounted")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_run_up)


def _run_up(a: argparse.Namespace) -> int:
    from pathlib import Path

    data = Path(a.data)
    if (data / "atlas" / "manifest.json").is_file():
        steer = data / "katlas" if (data / "katlas" / "manifest.json").is_file() else None
        print(f"serving {data / 'atlas'}" + (f" with steering atlas {steer}" if steer else " (no steering atlas)"))
        from app.server import serve

        serve(str(data / "atlas"), str(steer) if steer else None, host=a.host, port=a.port, device=a.device)
        return 0
    print(f"no atlas at {data / 'atlas'}: serving the embedded demo")
    return _run_demo(argparse.Namespace(cache_dir=a.cache_dir, rebuild=False, host=a.host, port=a.port,
                                        no_serve=False, device=a.device))


def _add_atlas(sub: argparse._SubParsersAction) -> None:
    from .atlas import AtlasConfig

    d = AtlasConfig(acts="", sae="", out="")
    p = sub.add_parser("atlas", help="top-k images per latent, patch masks, stats, labels, faiss indexes",
                       description="Build the atlas folder the app browses (written atomically, manifest last).")
    p.add_argument("--acts", required=True, help="activation cache folder (or a plain .npy: no image parts)")
    p.add_argument("--sae", required=True, help="SAE folder")
    p.add_argument("--out", required=True, help="atlas folder")
    p.add_argument("--k", type=int, default=d.k, help="top images per latent")
    p.add_argument("--images-root", default=None, help="where the images live (default: the cache's images_root)")
    p.add_argument("--score", choices=["max", "mean", "cls"], default=d.score, help="image score for token caches")
    p.add_argument("--stats-images", type=int, default=d.stats_images, help="images used for histograms/quantiles")
    p.add_argument("--block-mb", type=int, default=d.block_mb, help="memory budget of one block")
    p.add_argument("--vocab", default=None, help="label vocabulary file (one concept per line)")
    p.add_argument("--no-masks", action="store_true")
    p.add_argument("--no-labels", action="store_true")
    p.add_argument("--device", default=d.device)
    p.set_defaults(func=_run_atlas)


def _run_atlas(a: argparse.Namespace) -> int:
    from .atlas import AtlasConfig, build_atlas

    cfg = AtlasConfig(acts=a.acts, sae=a.sae, out=a.out, k=a.k, score=a.score, block_mb=a.block_mb,
                      stats_images=a.stats_images, images_root=a.images_root, masks=not a.no_masks,
                      labels=not a.no_labels, vocab=a.vocab, device=a.device)
    m = build_atlas(cfg)
    print(f"atlas: {m['d_sae']} latents, top-{m['k']} of {m['n_images']} images, {m['n_dead']} dead -> {a.out}")
    for note in m["notes"]:
        print(f"  note: {note}")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_embed, _add_export, _add_atlas, _add_link, _add_serve, _add_demo, _add_up]
