"""ViT-Prisma SAEs: Hugging Face folders (`config.json` + `weights.pt`) and trainer
checkpoints (`n_images_N.pt`: `{"cfg": <config object>, "state_dict": {...}}`), exactly.

Read per ViT-Prisma's `vit_prisma/sae/sae.py` and `sae/config.py` (not installable: the
vit-prisma wheel has no SAE code). Forward: x -> norm_in(x) - b_dec -> @ W_enc + b_enc ->
activation -> @ W_dec + b_dec -> norm_out. Honoured: `architecture` standard and gated (as
the equivalent jumprelu; its unused `b_enc` is ignored as Prisma ignores it),
`activation_fn_str` relu / topk (`activation_fn_kwargs.k`), `normalize_activations`
layer_norm (unbiased std + 1e-5, our saelens variant) / constant_norm_rescale (unit_norm
with √d_in folded) / none, `hook_point_layer` + `layer_subtype` (the hook, in our spelling),
`cls_token_only` / `use_patches_only` (the tokens). Refused by name: `is_transcoder`,
`hook_point_head_index`, other activations or normalisations, gated with topk, jumprelu
(no Prisma forward defines it). The pickled config object of a trainer checkpoint is read
with `torch.load(weights_only=True)` and an inert stand-in class: its fields become plain
data and no code from the file runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .common import Draft, Refused, check_keys, gated_to_jumprelu, integral, load_pt, need, read_json, tensor_dict
from .hooks import canonical_hook, prisma_hook

CONFIG = "config.json"
WEIGHTS = "weights.pt"
_CONFIG_CLASS = "vit_prisma.sae.config.VisionModelSAERunnerConfig"


class PrismaConfigFields:
    """Inert stand-in for a pickled ViT-Prisma config: the unpickler fills `__dict__` only."""


CHECKPOINT_STUBS: dict[str, type] = {_CONFIG_CLASS: PrismaConfigFields}
"""The one class a Prisma checkpoint pickles, mapped to its stand-in (for `load_pt`)."""


def is_prisma_dir(src: Path) -> bool:
    if not ((src / CONFIG).is_file() and (src / WEIGHTS).is_file()):
        return False
    try:
        cfg = read_json(src / CONFIG)
    except ValueError:
        return False
    return "trainer" not in cfg  # dictionary-learning folders also have a config.json


def read_prisma_dir(src: Path) -> Draft:
    """A Prisma Hugging Face folder."""
    state = load_pt(src / WEIGHTS, str(src / WEIGHTS), CHECKPOINT_STUBS)
    if isinstance(state, dict) and "state_dict" in state:  # the trainer's form saved as weights.pt
        state = state["state_dict"]
    return _draft(read_json(src / CONFIG), tensor_dict(state, str(src / WEIGHTS)), str(src))


def read_prisma_checkpoint(path: Path) -> Draft:
    """A Prisma trainer checkpoint `n_images_N.pt` (its config travels inside)."""
    state = load_pt(path, str(path), CHECKPOINT_STUBS)
    if not (isinstance(state, dict) and {"cfg", "state_dict"} <= set(state)):
        raise Refused(f"{path}: expected ViT-Prisma's {{'cfg', 'state_dict'}} checkpoint")
    cfg = state["cfg"]
    fields = dict(vars(cfg)) if isinstance(cfg, PrismaConfigFields) else cfg
    if not isinstance(fields, dict):
        raise Refused(f"{path}: its 'cfg' is a {type(cfg).__name__}, not a ViT-Prisma config")
    return _draft(fields, tensor_dict(state["state_dict"], str(path)), str(path))


def _plain(value: Any) -> Any:
    """JSON-friendly config values (config.json wraps dtypes and devices as {'__type__': ...})."""
    if isinstance(value, dict) and "__type__" in value:
        return str(value.get("value"))
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _draft(raw: dict[str, Any], t: dict[str, torch.Tensor], where: str) -> Draft:
    cfg = {k: _plain(v) for k, v in raw.items()}
    if cfg.get("is_transcoder"):
        raise Refused(
            f"{where}: is_transcoder=true is refused: a transcoder reconstructs "
            f"{cfg.get('layer_out_subtype')!r} of another layer, not its own input"
        )
    if cfg.get("hook_point_head_index") is not None:
        raise Refused(
            f"{where}: hook_point_head_index={cfg['hook_point_head_index']!r}: an SAE on one "
            "attention head has no clipsae hook"
        )
    arch = cfg.get("architecture", "standard")
    act = cfg.get("activation_fn_str", "relu")
    if act not in ("relu", "topk"):
        raise Refused(f"{where}: activation_fn_str={act!r} is refused (clipsae honours relu and topk)")
    t = {k: v.to(torch.float64) for k, v in t.items()}
    if arch == "standard":
        check_keys(t, {"W_enc", "b_enc", "W_dec", "b_dec"}, where, "a Prisma standard SAE")
        need(t, ("W_enc", "b_enc", "W_dec", "b_dec"), where)
        draft = Draft(act, t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"])
        if act == "topk":
            draft.k = integral((cfg.get("activation_fn_kwargs") or {}).get("k"), "activation_fn_kwargs.k", where)
    elif arch == "gated":
        if act != "relu":
            raise Refused(
                f"{where}: architecture='gated' with activation_fn_str={act!r} is refused: the gate "
                "masks a top-k selection, which no clipsae rule computes"
            )
        check_keys(t, {"W_enc", "b_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"}, where, "a Prisma gated SAE")
        need(t, ("W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"), where)
        w, b, theta = gated_to_jumprelu(t["W_enc"], t["b_gate"], t["r_mag"], t["b_mag"])
        draft = Draft("jumprelu", w, b, t["W_dec"], t["b_dec"], threshold=theta)
        draft.folds.append(
            "gated encoder as jumprelu: W_enc·e^r_mag, b_mag, θ = b_mag − e^r_mag·b_gate "
            "(Prisma's gated forward does not use b_enc)"
        )
    else:
        raise Refused(f"{where}: architecture={arch!r} is refused (ViT-Prisma's SAE defines standard and gated)")
    _normalisation(draft, cfg.get("normalize_activations"), where)
    _shapes(draft, cfg, where)
    draft.metadata = _metadata(cfg, where)
    return draft


def _normalisation(draft: Draft, norm: Any, where: str) -> None:
    if norm == "layer_norm":
        draft.normalize, draft.layer_norm_variant = "layer_norm", "saelens"
    elif norm == "constant_norm_rescale":
        draft.normalize = "unit_norm"
        draft.fold_input_scale(math.sqrt(draft.d_in), "constant_norm_rescale = unit_norm × √d_in")
    elif norm not in (None, "none"):
        raise Refused(
            f"{where}: normalize_activations={norm!r} is refused (ViT-Prisma's SAE applies "
            "layer_norm, constant_norm_rescale or nothing)"
        )


def _shapes(draft: Draft, cfg: dict[str, Any], where: str) -> None:
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if d_in is not None and d_in != draft.d_in:
        raise Refused(f"{where}: d_in={d_in!r} but W_enc is {[draft.d_in, draft.d_sae]}")
    if d_sae is not None and d_sae != draft.d_sae:
        raise Refused(f"{where}: d_sae={d_sae!r} but W_enc is {[draft.d_in, draft.d_sae]}")


def _metadata(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"converted_from": "vit-prisma", "source_cfg": cfg}
    if "hook_point_layer" in cfg:
        try:
            hook = prisma_hook(cfg["hook_point_layer"], cfg.get("layer_subtype", "hook_resid_post"))
        except ValueError as exc:
            raise Refused(f"{where}: {exc}") from None
    else:
        hook = cfg.get("hook_point")
    if isinstance(hook, str):
        meta["hook_name"] = canonical_hook(hook) or hook
        meta["source_hook_name"] = hook
        if meta["hook_name"].startswith("blocks."):
            meta["tokens"] = (
                "cls" if cfg.get("cls_token_only") else ("spatial" if cfg.get("use_patches_only") else "all")
            )
    if cfg.get("model_name"):
        meta["source_model_name"] = cfg["model_name"]
    return meta
