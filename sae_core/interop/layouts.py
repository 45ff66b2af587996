"""`convert` and `export_sae`: which library a file or folder comes from, and its importer or exporter."""

from __future__ import annotations

from pathlib import Path

from ..io import CFG_FILE, WEIGHTS_FILE, load_sae, save_sae
from ..sae import SparseAutoencoder
from . import EXPORT_TARGETS, Hints
from .common import Draft, Refused, load_pt, read_json
from .dictlearn import dictlearn_files, read_dictlearn, without_config
from .overcomplete import is_overcomplete_state, load_state, read_overcomplete
from .prisma import CHECKPOINT_STUBS, is_prisma_dir, read_prisma_checkpoint, read_prisma_dir
from .saelens import export_saelens, is_saelens_dir, read_saelens
from .saev import is_saev_file, read_saev
from .sparsify import export_sparsify, hookpoint_of, is_sparsify_dir, read_sparsify, sparsify_hookpoints


def detect_source(src: str | Path) -> str:
    """The source library of a file or folder, or a clear error listing the layouts we read."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    if src.is_dir():
        if (src / CFG_FILE).is_file() and (src / WEIGHTS_FILE).is_file():
            return "sae-lens" if is_saelens_dir(src) else "clipsae"
        if is_sparsify_dir(src):
            return "sparsify"
        if dictlearn_files(src):
            return "dictionary-learning"
        if is_prisma_dir(src):
            return "vit-prisma"
        if sparsify_hookpoints(src):
            return "sparsify-trainer"
        if (src / "ae.pt").is_file():
            raise Refused(without_config(src / "ae.pt") or f"{src}: unreadable ae.pt")
    else:
        if is_saev_file(src):
            return "saev"
        if dictlearn_files(src):
            return "dictionary-learning"
        if src.suffix in (".pt", ".pth", ".safetensors"):
            return "torch-file"
    raise ValueError(
        f"{src}: unknown SAE layout; clipsae converts SAELens folders (cfg.json + sae_weights.safetensors), "
        "sparsify folders (cfg.json + sae.safetensors) or trainer folders, ViT-Prisma folders (config.json + "
        "weights.pt) or n_images_N.pt, saev sae.pt, dictionary-learning ae.pt + config.json, and "
        "overcomplete state dicts (.pt/.safetensors with --arch)"
    )


def _read_file(src: Path, hints: Hints) -> tuple[str, Draft]:
    """A .pt/.safetensors file: a Prisma checkpoint or an overcomplete state dict."""
    if src.suffix != ".safetensors":
        state = load_pt(src, str(src), CHECKPOINT_STUBS)
        if isinstance(state, dict) and {"cfg", "state_dict"} <= set(state):
            return "vit-prisma", read_prisma_checkpoint(src)
        problem = without_config(src, set(state) if isinstance(state, dict) else None)
        if problem:
            raise Refused(problem)
    if is_overcomplete_state(load_state(src)):
        return "overcomplete", read_overcomplete(src, hints.arch, hints.k, hints.dictionary_norm)
    raise ValueError(
        f"{src}: neither a ViT-Prisma checkpoint ({{'cfg', 'state_dict'}}) nor an overcomplete "
        "state dict (dictionary._weights); see `clipsae convert --help` for the layouts read"
    )


def _check_hints(layout: str, hints: Hints) -> None:
    """A hint for something the source records is refused: the file's own value wins."""
    given = {
        "--norm-scaling-factor": hints.norm_scaling_factor is not None and layout != "sae-lens",
        "--arch": hints.arch is not None and layout != "overcomplete",
        "--k": hints.k is not None and layout != "overcomplete",
        "--dictionary-norm": hints.dictionary_norm != "l2" and layout != "overcomplete",
    }
    wrong = [flag for flag, bad in given.items() if bad]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} is not for a {layout} source: it records that itself")


def convert(
    src: str | Path, dst: str | Path, hints: Hints = Hints()
) -> tuple[str, list[tuple[Path, SparseAutoencoder]]]:
    """Convert another library's SAE (file or folder) into our layout at `dst`.

    Returns (source layout, [(written folder, sae), ...]): one SAE, or one per hookpoint of a
    sparsify trainer folder (written to dst/<hookpoint>/). Nothing is written on refusal."""
    src, dst = Path(src), Path(dst)
    layout = detect_source(src)
    if layout == "torch-file":
        layout, draft = _read_file(src, hints)
        _check_hints(layout, hints)
        return layout, [(dst, _write(draft, src, dst))]
    _check_hints(layout, hints)
    if layout == "sparsify-trainer":
        run_cfg = read_json(src / "config.json") if (src / "config.json").is_file() else {}
        drafts = [
            (dst / p.relative_to(src), read_sparsify(p, hookpoint_of(p, src), run_cfg), p)
            for p in sparsify_hookpoints(src)
        ]
        return layout, [(out, _write(draft, p, out)) for out, draft, p in drafts]
    if layout == "clipsae":
        sae = load_sae(src)
        save_sae(sae, dst)
        return layout, [(dst, sae)]
    readers = {
        "sae-lens": lambda: read_saelens(src, hints.norm_scaling_factor),
        "sparsify": lambda: read_sparsify(src),
        "vit-prisma": lambda: read_prisma_dir(src),
        "saev": lambda: read_saev(src),
        "dictionary-learning": lambda: read_dictlearn(*dictlearn_files(src)),  # type: ignore[misc]
    }
    return layout, [(dst, _write(readers[layout](), src, dst))]


def _write(draft: Draft, src: Path, dst: Path) -> SparseAutoencoder:
    sae = draft.to_sae(str(src))
    save_sae(sae, dst)
    return sae


def export_sae(sae_dir: str | Path, dst: str | Path, to: str) -> Path:
    """Write our SAE folder `sae_dir` in another library's layout (`to`: saelens | sparsify)."""
    if to not in EXPORT_TARGETS:
        raise ValueError(f"--to must be one of {', '.join(EXPORT_TARGETS)}; got {to!r}")
    sae = load_sae(sae_dir)
    try:
        return (export_saelens if to == "saelens" else export_sparsify)(sae, Path(dst))
    except Refused as exc:
        raise Refused(f"{sae_dir} cannot be written for {to}: {exc}") from None
