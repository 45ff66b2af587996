"""The SAE stage's `clipsae` subcommands: train, metrics, convert, export-sae.

Each is a thin wrapper: parse flags (generated from the config dataclasses), build the
stage's config, call its main. The `clipsae` command itself is assembled in `app/cli.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .cliargs import add_config_flags, config_from_args
from .config import SAEConfig, TrainConfig


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
                       description="Train one SAE, or one per swept value on the same batches. Every "
                                   "TrainConfig field is a flag; `train_config.json` records the values used.")
    p.add_argument("--acts", required=True, help="a .npy matrix [N, d] or an activation cache folder")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per swept value)")
    m = p.add_argument_group("model (SAEConfig, saved in cfg.json)")
    add_config_flags(m, SAEConfig, skip=("d_in", "k", "norm_scaling_factor", "layer_norm_variant", "dtype", "metadata"),
                     names={"architecture": "--arch", "normalize_activations": "--normalize"}, required=("d_sae",))
    m.add_argument("--k", type=_ints, default=None, help="active latents for topk/batchtopk; a comma list sweeps")
    m.add_argument("--l1", type=_floats, default=None,
                   help="sparsity coefficient λ (relu: L1, jumprelu: L0); a comma list sweeps (default 1e-3)")
    add_config_flags(p.add_argument_group("run (TrainConfig, saved in train_config.json)"), TrainConfig)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint exactly")
    p.add_argument("--overwrite", action="store_true", help="replace SAEs already in OUT")
    p.set_defaults(func=_run_train)


def _run_train(a: argparse.Namespace) -> int:
    from .data import ActivationSource
    from .sweep import make_specs
    from .train import train

    if a.architecture in ("topk", "batchtopk"):
        if not a.k:
            raise ValueError(f"--arch {a.architecture} needs --k (for example --k 32, or --k 16,32,64 to sweep)")
        k_values: list[int | None] = list(a.k)
        l1_values = a.l1 or [0.0]
    else:
        if a.k:
            raise ValueError(f"--k is for topk/batchtopk; --arch {a.architecture} uses --l1")
        k_values = [None]
        l1_values = a.l1 or [1e-3]
    d_in = ActivationSource(a.acts).d
    base = config_from_args(SAEConfig, a, d_in=d_in, k=k_values[0])
    cfg = config_from_args(TrainConfig, a)
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
    p.add_argument("--batch-size", type=int, default=8192, help="rows per forward pass (default: %(default)s)")
    p.add_argument("--max-rows", type=int, default=None, help="evaluate on the first N rows only")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.set_defaults(func=_run_metrics)


def _run_metrics(a: argparse.Namespace) -> int:
    from .evaluate import metrics_main

    print(metrics_main(a.acts, a.sae, out=a.out, batch_size=a.batch_size, device=a.device, max_rows=a.max_rows))
    return 0


# ---------------------------------------------------------------- convert / export-sae
_SOURCES = ("SAELens folder, sparsify folder or trainer folder, ViT-Prisma folder (config.json + weights.pt) "
            "or n_images_N.pt, saev sae.pt, dictionary-learning trainer_N/ (ae.pt + config.json), "
            "overcomplete state dict (.pt/.safetensors, with --arch)")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import another library's SAE exactly (or refuse what cannot be honoured)",
                       description="Convert an SAE of SAELens, sparsify, ViT-Prisma, saev, dictionary-learning "
                                   "or overcomplete into our layout. Every field is honoured exactly (folded "
                                   "into the weights) or refused by name. A sparsify trainer folder gives one "
                                   "SAE per hookpoint under DST.")
    p.add_argument("src", help=_SOURCES)
    p.add_argument("dst", help="output SAE folder")
    p.add_argument("--norm-scaling-factor", type=float, default=None,
                   help="SAELens expected_average_only_in: the factor, when no activation_scaler.json is beside "
                        "cfg.json (SAELens's pretrained_saes.yaml lists it)")
    p.add_argument("--arch", choices=("relu", "topk", "jumprelu", "batchtopk"), default=None,
                   help="overcomplete only (its state dict does not record the class): SAE=relu, TopKSAE=topk, "
                        "JumpSAE=jumprelu, BatchTopKSAE=batchtopk")
    p.add_argument("--k", type=int, default=None, help="overcomplete TopKSAE only: its top_k")
    p.add_argument("--dictionary-norm", default="l2", help="overcomplete only: the dictionary normalisation "
                   "it was built with (l2, the default; max_l2, l1, max_l1, identity)")
    p.set_defaults(func=_run_convert)


def _run_convert(a: argparse.Namespace) -> int:
    from .interop import Hints, convert

    hints = Hints(norm_scaling_factor=a.norm_scaling_factor, arch=a.arch, k=a.k, dictionary_norm=a.dictionary_norm)
    layout, written = convert(a.src, a.dst, hints)
    for path, sae in written:
        c = sae.cfg
        folds = c.metadata.get("converted_folds") or []
        print(f"converted {layout} SAE ({c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}, "
              f"hook={c.metadata.get('hook_name', 'unknown')}) -> {path}")
        for fold in folds:
            print(f"  folded: {fold}")
    return 0


def _add_export_sae(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-sae", help="write an SAE of ours as a SAELens or sparsify folder",
                       description="Write SAE in another library's layout, equal to ours up to float rounding "
                                   "(normalisations folded); what the target cannot express is refused by name.")
    p.add_argument("sae", help="our SAE folder")
    p.add_argument("dst", help="output folder")
    p.add_argument("--to", required=True, choices=("saelens", "sparsify"), help="target library")
    p.set_defaults(func=_run_export_sae)


def _run_export_sae(a: argparse.Namespace) -> int:
    from .interop import export_sae

    print(f"wrote {a.to} SAE -> {export_sae(a.sae, a.dst, a.to)}")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_train, _add_metrics, _add_convert, _add_export_sae]
"""The subcommands of this stage; `app/cli.py` assembles every stage's into `clipsae`."""
