"""`clipsae`: one command, one subcommand per stage. `clipsae --help` lists them.

Each subcommand is a thin wrapper: parse flags, build the stage's config, call its main.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable

from .config import ARCHITECTURES, NORMALIZATIONS, SAEConfig, TrainConfig
from .errors import TrainingDiverged


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# ---------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train SAEs on an activation matrix (a λ or k sweep in one pass)",
                       description="Train one SAE, or one per swept value on the same batches.")
    p.add_argument("--acts", required=True, help="a .npy matrix [N, d] or an activation cache folder")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per swept value)")
    p.add_argument("--arch", choices=ARCHITECTURES, default="relu")
    p.add_argument("--d-sae", type=int, required=True, help="number of latents")
    p.add_argument("--k", type=_ints, default=None, help="active latents for topk/batchtopk; comma list sweeps")
    p.add_argument("--l1", type=_floats, default=None,
                   help="sparsity coefficient λ (relu: L1, jumprelu: L0); comma list sweeps (default 1e-3)")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="none", help="input normalisation (undone on output)")
    p.add_argument("--jumprelu-bandwidth", type=float, default=SAEConfig.__dataclass_fields__["jumprelu_bandwidth"].default,
                   help="ε of JumpReLU's straight-through estimator; scale it with the pre-activations")
    d = TrainConfig()
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--lr-warmup-steps", type=int, default=d.lr_warmup_steps)
    p.add_argument("--lr-decay", choices=["linear", "cosine", "none"], default=d.lr_decay)
    p.add_argument("--l1-warmup-steps", type=int, default=d.l1_warmup_steps)
    p.add_argument("--b-dec-init", choices=["geometric_median", "mean", "zeros"], default=d.b_dec_init)
    p.add_argument("--dead-latents", choices=["auto", "auxk", "resample", "none"], default=d.dead_latents)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--block-rows", type=int, default=d.block_rows, help="rows read from disk at once")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps (0: never)")
    p.add_argument("--log-every", type=int, default=d.log_every, help="steps between metric lines")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint exactly")
    p.add_argument("--overwrite", action="store_true", help="replace SAEs already in OUT")
    p.set_defaults(func=_run_train)


def _run_train(a: argparse.Namespace) -> int:
    from .data import ActivationSource
    from .sweep import make_specs
    from .train import train

    if a.arch in ("topk", "batchtopk"):
        if not a.k:
            raise ValueError(f"--arch {a.arch} needs --k (for example --k 32, or --k 16,32,64 to sweep)")
        k_values: list[int | None] = list(a.k)
        l1_values = a.l1 or [0.0]
    else:
        if a.k:
            raise ValueError(f"--k is for topk/batchtopk; --arch {a.arch} uses --l1")
        k_values = [None]
        l1_values = a.l1 or [1e-3]
    d_in = ActivationSource(a.acts).d
    base = SAEConfig(d_in=d_in, d_sae=a.d_sae, architecture=a.arch, k=k_values[0], normalize_activations=a.normalize,
                     jumprelu_bandwidth=a.jumprelu_bandwidth)
    cfg = TrainConfig(
        batch_size=a.batch_size, epochs=a.epochs, seed=a.seed, device=a.device, lr=a.lr,
        lr_warmup_steps=a.lr_warmup_steps, lr_decay=a.lr_decay, l1_warmup_steps=a.l1_warmup_steps,
        b_dec_init=a.b_dec_init, dead_latents=a.dead_latents, grad_clip=a.grad_clip, block_rows=a.block_rows,
        checkpoint_every=a.checkpoint_every, log_every=a.log_every,
    )
    written = train(a.acts, a.out, make_specs(base, l1_values, k_values), cfg, resume=a.resume, overwrite=a.overwrite)
    for path in written:
        print(path)
    return 0


# ---------------------------------------------------------------- metrics
def _add_metrics(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="MSE, L1, L0, explained variance, ... of SAEs on held-out activations")
    p.add_argument("--acts", required=True, help="a .npy matrix or an activation cache folder")
    p.add_argument("--sae", required=True, help="an SAE folder, or a folder of them (a sweep)")
    p.add_argument("--out", default=None, help="also write the Markdown table here (+ .json)")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--max-rows", type=int, default=None, help="evaluate on the first N rows only")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_run_metrics)


def _run_metrics(a: argparse.Namespace) -> int:
    from .evaluate import metrics_main

    print(metrics_main(a.acts, a.sae, out=a.out, batch_size=a.batch_size, device=a.device, max_rows=a.max_rows))
    return 0


# ---------------------------------------------------------------- convert
def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a ViT-Prisma or sparsify SAE folder into our (SAELens) layout")
    p.add_argument("src", help="ViT-Prisma folder (config.json + weights.pt) or sparsify folder (cfg.json + sae.safetensors)")
    p.add_argument("dst", help="output SAE folder")
    p.set_defaults(func=_run_convert)


def _run_convert(a: argparse.Namespace) -> int:
    from .io import convert

    layout, sae = convert(a.src, a.dst)
    c = sae.cfg
    print(f"converted {layout} SAE ({c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}) -> {a.dst}")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_train, _add_metrics, _add_convert]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipsae",
        description="Sparse autoencoders on CLIP: extract activations, train, build an atlas, explore and steer.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for extra in _extra_commands():
        extra(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands that live in the other packages (precompute, app, evaluation)."""
    from evaluation.cli import add_eval
    from precompute.cli import COMMANDS as precompute_commands

    return [*precompute_commands, add_eval]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, TrainingDiverged) as exc:
        print(f"clipsae {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"clipsae {args.command}: error: no space left on the device ({exc.filename or exc}). Files are written "
              "atomically, so nothing partial was kept: free some space and run the same command again "
              "(embed resumes from its finished shards).", file=sys.stderr)
        return 28
    except KeyboardInterrupt:
        print(f"clipsae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
