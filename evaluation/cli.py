"""`clipsae eval recon|zeroshot|probe|heatmap|segment|latents`: the seeds' experiments, one command each.

Each writes OUT/<name>.md, .csv, .json (+ PNG plots) and prints the table.

    clipsae eval recon    --acts heldout_cache/ --sae saes/ --out results/
    clipsae eval zeroshot --dataset cifar-10-batches-bin/ --sae saes/ --out results/
    clipsae eval probe    --dataset cifar-100-binary/ --sae saes/l1_0.001 --out results/
    clipsae eval heatmap  --image cat.jpg --text "a photo of a cat" --sae saes/l1_0.001 --latent 12 --scale 0
    clipsae eval segment  --dataset imagenet_val/ --sae saes/l1_0.001 --classes "tabby cat" --out results/
    clipsae eval latents  --atlas atlas/ --acts heldout_cache/ --labels imagenet/ --out results/
    clipsae eval card     --sae saes/l1_0.001 --acts heldout_cache/ --evaluator facebook/dinov2-base --out card/
    clipsae eval compare  card_a/ card_b/ --out results/
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = "eval_results"


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (default: what the SAE's cfg.json records)")
    g.add_argument("--model", default=None, help="OpenCLIP model name or local config .json")
    g.add_argument("--pretrained", default=None, help="OpenCLIP tag, local checkpoint, or none (random weights)")
    g.add_argument("--hook", default=None, help="embed or blocks.L.{resid_post|mlp_out|attn_out}")
    g.add_argument("--tokens", choices=["cls", "spatial", "all"], default=None,
                   help="token positions the SAE reads at a block hook")
    g.add_argument("--device", default="auto")
    g.add_argument("--batch-size", type=int, default=64)


def _common(p: argparse.ArgumentParser, sae_many: bool = True) -> None:
    p.add_argument("--sae", required=True, nargs="+" if sae_many else None,
                   help="SAE folder(s); a folder of SAEs (a sweep) gives one row each")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT}/)")


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluation: reconstruction, zero-shot, linear probe, gradient heat maps, class "
                                    "masks, latent statistics, scorecards",
                       description="Reproduce the seed reports' experiments; each writes Markdown + CSV (+ PNG).")
    ev = p.add_subparsers(dest="eval_command", required=True, metavar="EVAL")

    r = ev.add_parser("recon", help="λ / dict size / L0 / MSE / L1 / R² per SAE + the L0–R² trade-off plot")
    r.add_argument("--acts", required=True, help="held-out activations: a cache folder or a .npy matrix")
    _common(r)
    r.add_argument("--batch-size", type=int, default=8192)
    r.add_argument("--max-rows", type=int, default=None)
    r.add_argument("--device", default="auto")
    r.set_defaults(func=_run_recon)

    z = ev.add_parser("zeroshot", help="zero-shot accuracy, CLIP vs CLIP + SAE reconstruction; CE recovered")
    z.add_argument("--dataset", required=True, help="CIFAR-10/100 binary folder or an ImageFolder tree")
    z.add_argument("--split", choices=["test", "train"], default="test")
    z.add_argument("--classes", default=None, help="text file: one class name per line, in label order")
    z.add_argument("--templates", default=None, help="cifar, openai, simple or a text file (one '{}' template a line)")
    z.add_argument("--logit-scale", type=float, default=None, help="default: the model's own")
    z.add_argument("--max-images", type=int, default=None, help="a seeded random subset of this many images")
    _common(z)
    _model_flags(z)
    z.set_defaults(func=_run_zeroshot)

    pr = ev.add_parser("probe", help="logistic-regression probe on CLIP vs CLIP + SAE vs SAE latents")
    pr.add_argument("--dataset", required=True, help="CIFAR-10/100 binary folder or ImageFolder with train/ and test/")
    pr.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength")
    pr.add_argument("--max-iter", type=int, default=1000)
    pr.add_argument("--max-images", type=int, default=None, help="a seeded random subset of each split")
    _common(pr)
    _model_flags(pr)
    pr.set_defaults(func=_run_probe)

    h = ev.add_parser("heatmap", help="gradient heat maps of image–text similarity, with latents zeroed/scaled")
    h.add_argument("--image", required=True)
    h.add_argument("--text", required=True, help="the text whose similarity is explained")
    h.add_argument("--latent", type=int, nargs="*", default=None, help="latents to edit (default: the 3 most active)")
    h.add_argument("--scale", type=float, default=0.0, help="multiplier for those latents (0 removes them)")
    h.add_argument("--method", choices=["grad_x_input", "grad_norm"], default="grad_x_input")
    _common(h, sae_many=False)
    _model_flags(h)
    h.set_defaults(func=_run_heatmap)
    _add_segment(ev)
    _add_latents(ev)
    from .card_cli import add_card_commands
    add_card_commands(ev)


def _add_segment(ev: argparse._SubParsersAction) -> None:
    from sae_core.cliargs import add_config_flags

    from .segment import SegmentConfig

    p = ev.add_parser("segment", help="per class, its most active latents and their class-averaged patch masks",
                      description="Seed 004's figure 6: class-averaged patch masks of each class's most active "
                                  "latents (PNG per class + CSV).")
    add_config_flags(p, SegmentConfig, required=("dataset", "sae"))
    p.set_defaults(func=_run_segment)


def _run_segment(a: argparse.Namespace) -> int:
    from sae_core.cliargs import config_from_args

    from .segment import SegmentConfig, segment_main

    table, failures = segment_main(config_from_args(SegmentConfig, a))
    _finish(a, "segment", table, failures)
    return 0


def _add_latents(ev: argparse._SubParsersAction) -> None:
    from sae_core.cliargs import add_config_flags

    from .latent_stats import LatentStatsConfig

    p = ev.add_parser("latents", help="frequency × mean-activation map, images per latent, label entropy, Table 1",
                      description="Seed 004's latent statistics on train and held-out activations (PNG + CSV + "
                                  "Markdown); PatchSAE's label entropy when the images' classes are known.")
    add_config_flags(p, LatentStatsConfig, required=("atlas",))
    p.set_defaults(func=_run_latents)


def _run_latents(a: argparse.Namespace) -> int:
    from sae_core.cliargs import config_from_args

    from .latent_stats import LatentStatsConfig, latent_stats_main

    table = latent_stats_main(config_from_args(LatentStatsConfig, a))
    _finish(a, "latents_table", table, [])
    print(f"per latent: {Path(a.out) / 'latents.csv'}; plots: latents_map.png, latents_images.png")
    return 0


def _setup(a: argparse.Namespace):
    from sae_core.device import resolve_device

    from .common import ModelChoice, load_clip, load_saes

    saes = load_saes(a.sae if isinstance(a.sae, list) else [a.sae], resolve_device(a.device))
    clip = load_clip(saes, ModelChoice(a.model, a.pretrained, a.hook, a.tokens, a.device))
    return saes, clip


def _finish(a: argparse.Namespace, name: str, table: str, failures: list[str]) -> None:
    from sae_core.files import atomic_write_text

    if failures:
        atomic_write_text(Path(a.out) / f"{name}_skipped.txt", "\n".join(failures) + "\n")
        print(f"skipped {len(failures)} unreadable images (listed in {Path(a.out) / f'{name}_skipped.txt'})")
    print(table)
    print(f"\nwrote {Path(a.out) / name}.md, .csv, .json")


def _run_recon(a: argparse.Namespace) -> int:
    from sae_core.device import resolve_device

    from .common import load_saes
    from .recon import COLUMNS, recon
    from .report import scatter_png, write_table

    dev = resolve_device(a.device)
    rows = recon(load_saes(a.sae, dev), a.acts, batch_size=a.batch_size, device=dev, max_rows=a.max_rows)
    table = write_table(a.out, "recon", rows, COLUMNS, title=f"SAE reconstruction on {a.acts}")
    scatter_png(Path(a.out) / "recon_tradeoff.png", [(r["l0"], r["explained_variance"], r["sparsity"]) for r in rows],
                "average L0 (active latents per input)", "explained variance (R²)",
                "Sparsity / reconstruction trade-off", log_x=True)
    _finish(a, "recon", table, [])
    return 0


def _run_zeroshot(a: argparse.Namespace) -> int:
    from .datasets import open_dataset
    from .prompts import classes_from_file, templates_for
    from .report import scatter_png, write_table
    from .zeroshot import COLUMNS, zeroshot

    data = open_dataset(a.dataset, a.split if a.split == "train" else None).subset(a.max_images)
    classnames = classes_from_file(a.classes, len(data.classnames)) if a.classes else data.classnames
    templates = templates_for(data.kind, a.templates)
    saes, clip = _setup(a)
    rows, failures = zeroshot(clip, saes, data, classnames, templates, batch_size=a.batch_size,
                              logit_scale=a.logit_scale)
    notes = (f"{rows[0]['n_images']} {a.split} images, {len(classnames)} classes, {len(templates)} templates, "
             f"logit scale {rows[0]['logit_scale']:.4g}, hook {clip.hook} ({clip.tokens}). "
             "CE recovered = (CE_zero − CE_recon) / (CE_zero − CE), zero ablation at the hook.")
    table = write_table(a.out, "zeroshot", rows, COLUMNS, title=f"Zero-shot {data.name}", notes=notes)
    scatter_png(Path(a.out) / "zeroshot_accuracy.png", [(r["hook_l0"], r["acc_sae"], r["sparsity"]) for r in rows],
                "average L0 at the hook", "zero-shot accuracy with the SAE spliced in",
                f"Zero-shot {data.name}", log_x=True, hline=(rows[0]["acc_clip"], "CLIP"))
    _finish(a, "zeroshot", table, failures)
    return 0


def _run_probe(a: argparse.Namespace) -> int:
    from .datasets import open_dataset
    from .probe import COLUMNS, probe
    from .report import write_table

    train = open_dataset(a.dataset, "train").subset(a.max_images)
    test = open_dataset(a.dataset, "test").subset(a.max_images)
    saes, clip = _setup(a)
    rows, failures = probe(clip, saes, train, test, batch_size=a.batch_size, C=a.C, max_iter=a.max_iter)
    notes = (f"logistic regression (C={a.C}) fitted on {rows[0]['n_train']} train images, scored on "
             f"{rows[0]['n_test']} test images; precision / recall / F1 are macro averages.")
    table = write_table(a.out, "probe", rows, COLUMNS, title=f"Linear probe {train.name}", notes=notes)
    _finish(a, "probe", table, failures)
    return 0


def _run_heatmap(a: argparse.Namespace) -> int:
    from precompute.images import load_image
    from sae_core.files import atomic_write_with

    from .heatmap import compare, heat_overlay, scale_latents
    from .report import Column, write_table

    saes, clip = _setup(a)
    sae = saes[0].sae
    image, _ = load_image(a.image)
    pixels = clip.preprocess(image)[None].to(clip.device)
    latents = a.latent or top_latents(clip, sae, pixels, 3)
    result = compare(clip, sae, pixels, clip.text_embedding(a.text), scale_latents(latents, a.scale), a.method)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    vmax = float(max(result.base.max(), result.edited.max()))
    stem = Path(a.image).stem
    files = {"base": heat_overlay(image, result.base, vmax), "edited": heat_overlay(image, result.edited, vmax),
             "difference": heat_overlay(image, result.difference, signed=True)}
    for key, im in files.items():
        atomic_write_with(out / f"{stem}_heat_{key}.png", lambda tmp, im=im: im.save(tmp, format="PNG"))
    row = {"image": a.image, "text": a.text, "latents": " ".join(map(str, latents)), "scale": a.scale,
           "sim_base": result.sim_base, "sim_edited": result.sim_edited,
           "heat_change": float(abs(result.difference).sum() / max(abs(result.base).sum(), 1e-12))}
    cols = [Column("image", "Image"), Column("text", "Text"), Column("latents", "Latents"), Column("scale", "Scale"),
            Column("sim_base", "Similarity", "{:.4f}"), Column("sim_edited", "Similarity (edited)", "{:.4f}"),
            Column("heat_change", "Σ|Δ heat| / Σ heat", "{:.3f}")]
    table = write_table(out, f"{stem}_heatmap", [row], cols, title="Gradient heat map",
                        notes=f"Overlays: {', '.join(f'{stem}_heat_{k}.png' for k in files)} (difference: red = more, "
                              "blue = less salient after the edit).")
    _finish(a, f"{stem}_heatmap", table, [])
    return 0


def top_latents(clip, sae, pixels, n: int) -> list[int]:
    """The n latents most active on this image at the SAE's hook (max over its tokens)."""
    import torch

    found: list[torch.Tensor] = []

    def peek(acts: torch.Tensor) -> torch.Tensor:
        found.append(sae.encode(acts.reshape(-1, acts.shape[-1]).float()).amax(dim=0))
        return acts

    with torch.no_grad():
        clip.encode(pixels, peek)
    return [int(i) for i in found[0].topk(min(n, found[0].numel())).indices]
