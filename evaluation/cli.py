"""`clipsae eval recon|zeroshot|probe|heatmap|segment|latents`: the seeds' experiments, one command each.

Each writes OUT/<name>.md, .csv, .json (+ PNG plots) and prints the table. Every flag is a
field of the command's config (`evaluation/configs.py`); the work is in the command's module.

    clipsae eval recon    --acts heldout_cache/ --sae saes/ --out results/
    clipsae eval zeroshot --dataset cifar-10-batches-bin/ --sae saes/ --out results/
    clipsae eval probe    --dataset cifar-100-binary/ --sae saes/l1_0.001 --out results/
    clipsae eval heatmap  --image cat.jpg --text "a photo of a cat" --sae saes/l1_0.001 --latent 12 --scale 0
    clipsae eval segment  --dataset imagenet_val/ --sae saes/l1_0.001 --classes "tabby cat" --out results/
    clipsae eval latents  --atlas atlas/ --acts heldout_cache/ --class-folders imagenet/ --out results/
    clipsae eval card     --sae saes/l1_0.001 --acts heldout_cache/ --evaluator facebook/dinov2-base --out card/
    clipsae eval compare  card_a/ card_b/ --out results/
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from sae_core.cliargs import add_config_flags, config_from_args

from .configs import HeatmapConfig, LatentStatsConfig, ProbeConfig, ReconConfig, SegmentConfig, ZeroshotConfig


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluation: reconstruction, zero-shot, linear probe, gradient heat maps, class "
        "masks, latent statistics, scorecards",
        description="Reproduce the seed reports' experiments; each writes Markdown + CSV (+ PNG).",
    )
    ev = p.add_subparsers(dest="eval_command", required=True, metavar="EVAL")
    for name, cls, run, help_text, description in (
        (
            "recon",
            ReconConfig,
            _run_recon,
            "λ / dict size / L0 / MSE / L1 / R² per SAE + the L0–R² trade-off plot",
            None,
        ),
        (
            "zeroshot",
            ZeroshotConfig,
            _run_zeroshot,
            "zero-shot accuracy, CLIP vs CLIP + SAE reconstruction; CE recovered",
            None,
        ),
        ("probe", ProbeConfig, _run_probe, "logistic-regression probe on CLIP vs CLIP + SAE vs SAE latents", None),
        (
            "heatmap",
            HeatmapConfig,
            _run_heatmap,
            "gradient heat maps of image–text similarity, with latents zeroed/scaled",
            None,
        ),
        (
            "segment",
            SegmentConfig,
            _run_segment,
            "per class, its most active latents and their class-averaged patch masks",
            "Seed 004's figure 6: class-averaged patch masks of each class's most active latents (PNG per "
            "class + CSV).",
        ),
        (
            "latents",
            LatentStatsConfig,
            _run_latents,
            "frequency × mean-activation map, images per latent, label entropy, Table 1",
            "Seed 004's latent statistics on train and held-out activations (PNG + CSV + "
            "Markdown); PatchSAE's label entropy when the images' classes are known.",
        ),
    ):
        q = ev.add_parser(name, help=help_text, description=description)
        add_config_flags(q, cls)
        q.set_defaults(func=run)
    from .card_cli import add_card_commands  # card, compare (evaluation/card_cli.py)

    add_card_commands(ev)


def _run_recon(a: argparse.Namespace) -> int:
    from .recon import recon_main

    cfg = config_from_args(ReconConfig, a)
    _finish(cfg.out, "recon", recon_main(cfg), [])
    return 0


def _run_zeroshot(a: argparse.Namespace) -> int:
    from .zeroshot import zeroshot_main

    cfg = config_from_args(ZeroshotConfig, a)
    _finish(cfg.out, "zeroshot", *zeroshot_main(cfg))
    return 0


def _run_probe(a: argparse.Namespace) -> int:
    from .probe import probe_main

    cfg = config_from_args(ProbeConfig, a)
    _finish(cfg.out, "probe", *probe_main(cfg))
    return 0


def _run_heatmap(a: argparse.Namespace) -> int:
    from .heatmap import heatmap_main

    cfg = config_from_args(HeatmapConfig, a)
    _finish(cfg.out, *heatmap_main(cfg), [])
    return 0


def _run_segment(a: argparse.Namespace) -> int:
    from .segment import segment_main

    cfg = config_from_args(SegmentConfig, a)
    _finish(cfg.out, "segment", *segment_main(cfg))
    return 0


def _run_latents(a: argparse.Namespace) -> int:
    from .latent_stats import latent_stats_main

    cfg = config_from_args(LatentStatsConfig, a)
    _finish(cfg.out, "latents_table", latent_stats_main(cfg), [])
    print(f"per latent: {Path(cfg.out) / 'latents.csv'}; plots: latents_map.png, latents_images.png")
    return 0


def _finish(out: str, name: str, table: str, failures: list[str]) -> None:
    """Print what a command wrote: the images it skipped (listed in OUT/name_skipped.txt), its table, where."""
    from .report import write_skipped

    skipped = write_skipped(out, name, failures)
    if skipped is not None:
        print(f"skipped {len(failures)} unreadable images (listed in {skipped})")
    print(table)
    print(f"\nwrote {Path(out) / name}.md, .csv, .json")


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_eval]
"""The subcommands of this stage; `app/cli.py` assembles every stage's into `clipsae`."""
