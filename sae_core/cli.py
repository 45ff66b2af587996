"""The SAE stage's `clipsae` subcommands: train, metrics, convert, export-sae.

Each is a thin wrapper: its flags are the fields of its configs (`config.py`, and
`interop.ConvertConfig` / `ExportSAEConfig`), it builds them and calls the stage's main. The
`clipsae` command itself is assembled in `app/cli.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .cliargs import add_config_flags, config_from_args
from .config import DEFAULT_L1, TRAIN_NORMALIZE, MetricsConfig, SAEConfig, SweepConfig, TrainConfig
from .interop import ConvertConfig, ExportSAEConfig

__all__ = ["COMMANDS", "DEFAULT_L1"]


# ---------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train SAEs on an activation matrix (a λ, k or seed sweep in one pass)",
        description="Train one SAE, or one per swept value on the same batches. Every "
        "TrainConfig field is a flag; `train_config.json` records the values used.",
    )
    add_config_flags(p, SweepConfig, skip=("k", "groups", "l1", "seed"))
    m = p.add_argument_group("model (SAEConfig, saved in cfg.json)")
    add_config_flags(
        m,
        SAEConfig,
        skip=("d_in", "k", "groups", "norm_scaling_factor", "norm_centre", "layer_norm_variant", "dtype", "metadata"),
        names={"architecture": "--arch", "normalize_activations": "--normalize"},
        defaults={"normalize_activations": None},
        helps={
            "normalize_activations": "input normalisation, undone on the output: none, unit_norm, "
            "layer_norm, expected_average_only_in, centred_unit_norm (see SAEConfig). Unset: "
            "centred_unit_norm (config.TRAIN_NORMALIZE; SAELens cannot read it: pass none or "
            "unit_norm to export to SAELens)"
        },
    )
    add_config_flags(m, SweepConfig, skip=("acts", "out", "resume", "overwrite", "seed"))
    run = p.add_argument_group("run (TrainConfig, saved in train_config.json)")
    add_config_flags(run, SweepConfig, skip=("acts", "out", "resume", "overwrite", "k", "groups", "l1"))
    add_config_flags(run, TrainConfig, skip=("seed",))  # --seed is SweepConfig's: a comma list sweeps
    p.set_defaults(func=_run_train)


def _run_train(a: argparse.Namespace) -> int:
    from .data import ActivationSource
    from .sweep import make_specs
    from .train import train

    sweep = config_from_args(SweepConfig, a)
    k_values, l1_values = sweep.values(a.architecture)
    norm = a.normalize_activations or TRAIN_NORMALIZE.get(a.architecture, "none")
    base = config_from_args(
        SAEConfig,
        a,
        d_in=ActivationSource(sweep.acts).d,
        k=k_values[0],
        groups=sweep.groups or None,
        normalize_activations=norm,
    )
    seeds = list(sweep.seed or [TrainConfig.seed])
    cfg = config_from_args(TrainConfig, a, seed=seeds[0])
    specs = make_specs(base, l1_values, k_values, seeds if len(seeds) > 1 else None)
    written = train(sweep.acts, sweep.out, specs, cfg, resume=sweep.resume, overwrite=sweep.overwrite)
    for path in written:
        print(path)
    return 0


# ---------------------------------------------------------------- metrics
def _add_metrics(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "metrics",
        help="MSE, L1, L0, explained variance, ... of SAEs on held-out "
        "activations; --compare: seed stability against other SAEs",
    )
    add_config_flags(p, MetricsConfig)
    p.set_defaults(func=_run_metrics)


def _run_metrics(a: argparse.Namespace) -> int:
    from .evaluate import metrics_main

    c = config_from_args(MetricsConfig, a)
    if not c.acts and not c.compare:
        raise ValueError("metrics needs --acts (held-out activations), --compare (other SAEs), or both")
    if c.acts:
        print(metrics_main(c.acts, c.sae, out=c.out, batch_size=c.batch_size, device=c.device, max_rows=c.max_rows))
    if c.compare:
        from .evaluate import compare_main

        print(compare_main(c.sae, c.compare, c.stability_threshold, out=c.out))
    return 0


# ---------------------------------------------------------------- convert / export-sae
def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import another library's SAE exactly (or refuse what cannot be honoured)",
        description="Convert an SAE of SAELens, sparsify, ViT-Prisma, saev, dictionary-learning "
        "or overcomplete into our layout. Every field is honoured exactly (folded "
        "into the weights) or refused by name. A sparsify trainer folder gives one "
        "SAE per hookpoint under DST.",
    )
    add_config_flags(p, ConvertConfig)
    p.set_defaults(func=_run_convert)


def _run_convert(a: argparse.Namespace) -> int:
    from .interop import convert

    c = config_from_args(ConvertConfig, a)
    layout, written = convert(c.src, c.dst, c.hints)
    for path, sae in written:
        m = sae.cfg.metadata
        print(
            f"converted {layout} SAE ({sae.cfg.architecture}, d_in={sae.cfg.d_in}, d_sae={sae.cfg.d_sae}, "
            f"hook={m.get('hook_name', 'unknown')}) -> {path}"
        )
        for fold in m.get("converted_folds") or []:
            print(f"  folded: {fold}")
    return 0


def _add_export_sae(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-sae",
        help="write an SAE of ours as a SAELens or sparsify folder",
        description="Write SAE in another library's layout, equal to ours up to float rounding "
        "(normalisations folded); what the target cannot express is refused by name.",
    )
    add_config_flags(p, ExportSAEConfig)
    p.set_defaults(func=_run_export_sae)


def _run_export_sae(a: argparse.Namespace) -> int:
    from .interop import export_sae

    c = config_from_args(ExportSAEConfig, a)
    print(f"wrote {c.to} SAE -> {export_sae(c.sae, c.dst, c.to)}")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_train, _add_metrics, _add_convert, _add_export_sae]
"""The subcommands of this stage; `app/cli.py` assembles every stage's into `clipsae`."""
