"""EleutherAI sparsify folders (`cfg.json` + `sae.safetensors`) in and out, exactly.

In: `activation=topk` (f = the k largest of relu(encoder(x − b_dec)), decoded with W_dec +
b_dec) is our topk with W_enc = encoder.weight.T. Refused by name: `activation=groupmax`
(the max of each of k groups of latents: no clipsae rule computes it), `transcode` (predicts
another module's output), `skip_connection` / a `W_skip` tensor (adds x @ W_skip.T).
`normalize_decoder` and `multi_topk` only change training. A trainer folder (one sub-folder
per hookpoint, `config.json` beside them, the best checkpoints under `best/`) converts to one
SAE per folder, each named by its hookpoint.

Out (`export_sparsify`): topk SAEs with normalize none (or expected_average_only_in, folded);
everything else is refused by name (sparsify has no ReLU, threshold or input normalisation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..files import atomic_write_dir, read_safetensors
from ..sae import SparseAutoencoder
from .common import Draft, Refused, check_keys, integral, need, read_json
from .hooks import canonical_hook

CFG = "cfg.json"
WEIGHTS = "sae.safetensors"
_KNOWN_FIELDS = {
    "activation",
    "expansion_factor",
    "normalize_decoder",
    "num_latents",
    "k",
    "multi_topk",
    "skip_connection",
    "transcode",
    "d_in",
}


def is_sparsify_dir(src: Path) -> bool:
    return (src / CFG).is_file() and (src / WEIGHTS).is_file()


def sparsify_hookpoints(src: Path) -> list[Path]:
    """The SAE folders of a sparsify trainer folder: `<hookpoint>/` or `<hookpoint>/seedN/`, and
    the lowest-loss checkpoints `save_best` writes under `best/` (`best/<hookpoint>/` or
    `best/<hookpoint>/<hookpoint>/`)."""
    return sorted(p.parent for p in src.rglob(WEIGHTS) if is_sparsify_dir(p.parent) and p.parent != src)


def hookpoint_of(folder: Path, run: Path) -> str:
    """The hookpoint an SAE folder of trainer folder `run` was trained on: its first path part,
    after `best/` (sparsify's `save_best`); hookpoints hold no '/' (sparsify splits `/seedN` off)."""
    parts = folder.relative_to(run).parts
    return parts[1] if parts[0] == "best" and len(parts) > 1 else parts[0]


def read_sparsify(src: Path, hookpoint: str | None = None, run_cfg: dict[str, Any] | None = None) -> Draft:
    """One sparsify SAE folder as a Draft."""
    where = str(src / CFG)
    cfg = read_json(src / CFG)
    unknown = sorted(set(cfg) - _KNOWN_FIELDS)
    if unknown:
        raise Refused(
            f"{where}: unknown field(s) {', '.join(unknown)}; clipsae knows sparsify 1.3's "
            "SparseCoderConfig fields only and refuses the rest rather than ignore them"
        )
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise Refused(
            f"{where}: activation={activation!r} is refused: groupmax keeps the max of each of k "
            "groups of latents, which no clipsae rule computes (TopK would change which latents fire)"
        )
    for name in ("transcode", "skip_connection"):
        if cfg.get(name):
            raise Refused(
                f"{where}: {name}=true is refused: clipsae SAEs reconstruct their own input "
                "with encoder, decoder and b_dec only"
            )
    t = {k: v.to(torch.float64) for k, v in read_safetensors(src / WEIGHTS).items()}
    check_keys(t, {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}, str(src / WEIGHTS), "a sparsify SAE")
    need(t, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), str(src / WEIGHTS))
    d_sae, d_in = t["encoder.weight"].shape
    if cfg.get("d_in") not in (None, d_in):
        raise Refused(f"{where}: d_in={cfg['d_in']!r} but encoder.weight is {[d_sae, d_in]}")
    latents = cfg.get("num_latents") or d_in * cfg.get("expansion_factor", 32)
    if latents != d_sae:
        raise Refused(f"{where}: num_latents / expansion_factor give {latents} latents, the tensors {d_sae}")
    draft = Draft(
        "topk",
        t["encoder.weight"].T,
        t["encoder.bias"],
        t["W_dec"],
        t["b_dec"],
        k=integral(cfg.get("k", 32), "k", where),
    )
    meta: dict[str, Any] = {"converted_from": "sparsify", "source_cfg": cfg}
    if hookpoint:
        meta["source_hook_name"] = hookpoint
        meta["hook_name"] = canonical_hook(hookpoint) or _hf_hook(hookpoint) or hookpoint
    if run_cfg and run_cfg.get("model"):
        meta["source_model_name"] = run_cfg["model"]
    draft.metadata = meta
    return draft


def _hf_hook(name: str) -> str | None:
    """sparsify hookpoints of a Hugging Face CLIP vision tower, in our spelling: a layer's
    output `...layers.L` is blocks.L.resid_post, `...layers.L.mlp` its mlp_out and
    `...layers.L.self_attn` its attn_out."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layers" and parts[i + 1].isdigit():
            rest = parts[i + 2 :]
            site = {(): "resid_post", ("mlp",): "mlp_out", ("self_attn",): "attn_out"}.get(tuple(rest))
            return f"blocks.{parts[i + 1]}.{site}" if site else None
    return None


# ---------------------------------------------------------------- out
def export_sparsify(sae: SparseAutoencoder, dst: Path) -> Path:
    """Write a topk `sae` as a sparsify folder at `dst` (atomically), or refuse by name."""
    c = sae.cfg
    if c.architecture != "topk":
        raise Refused(f"architecture {c.architecture!r}: sparsify has TopK (and groupmax) coders only")
    t = {n: getattr(sae, n).detach().to("cpu", torch.float64) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if c.normalize_activations == "expected_average_only_in":
        s = float(c.norm_scaling_factor)  # type: ignore[arg-type]
        t["W_enc"], t["b_dec"], t["W_dec"] = t["W_enc"] * s, t["b_dec"] / s, t["W_dec"] / s
    elif c.normalize_activations != "none":
        raise Refused(
            f"normalize_activations={c.normalize_activations!r}: sparsify has no input "
            "normalisation, and a per-input one cannot be folded into weights (train with "
            "--normalize none to export)"
        )
    unit_rows = bool(torch.allclose(t["W_dec"].norm(dim=1), torch.ones(c.d_sae, dtype=torch.float64), atol=1e-5))
    cfg = {
        "activation": "topk",
        "expansion_factor": max(c.d_sae // c.d_in, 1),
        "normalize_decoder": unit_rows,
        "num_latents": c.d_sae,
        "k": c.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": c.d_in,
    }
    tensors = {"encoder.weight": t["W_enc"].T, "encoder.bias": t["b_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}

    def fill(tmp: Path) -> None:
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / CFG).write_text(json.dumps(cfg))

    return atomic_write_dir(dst, fill)
