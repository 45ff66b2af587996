"""SAELens folders (`cfg.json` + `sae_weights.safetensors`) in and out, exactly.

In: every field SAELens's loader reads is honoured or refused by name. Architectures:
standard (ReLU), topk, jumprelu (`threshold` or older `log_threshold`), gated (as the
equivalent jumprelu), and the training checkpoints of batchtopk and matryoshka_batchtopk
(their inference form: SAELens saves them as jumprelu with θ = topk_threshold).
`apply_b_dec_to_input=false` and `rescale_acts_by_decoder_norm=true` are folded into the
weights; `normalize_activations` none / layer_norm / constant_norm_rescale map to ours
(the last as unit_norm with √d_in folded); expected_average_only_in and covariance_whitening
are folded from the trainer's `activation_scaler.json` / `activation_whitening.safetensors`
beside cfg.json (or, with no scaler file, `norm_scaling_factor=`; a factor that disagrees with
the file, or given for another normalisation, is refused), else refused: SAELens applies
neither at inference. Fields SAELens itself ignores when loading (training hyper-parameters) are kept as
provenance in metadata.source_cfg. Configs written before SAELens 6 are read the way SAELens
reads them (`hook_point`, `activation_fn_str`, boolean `normalize_activations`).

Out (`export_saelens`): the SAELens 6 layout that `SAE.load_from_disk` reads, equal to ours
to float rounding: relu -> standard, topk -> topk, jumprelu and every threshold architecture
(batchtopk) -> jumprelu; unit_norm -> constant_norm_rescale with √d_in folded;
expected_average_only_in folded into the weights; layer_norm clipsae-v1 refused (SAELens has
no such formula).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..files import atomic_write_dir, read_safetensors
from ..rules import THRESHOLD_ARCHS
from ..sae import SparseAutoencoder
from .common import Draft, Refused, check_keys, gated_to_jumprelu, integral, need, read_json
from .hooks import canonical_hook, saelens_hook

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
SCALER = "activation_scaler.json"
WHITENING = "activation_whitening.safetensors"
SAELENS_LAYOUT_VERSION = "6.54.12"
"""The SAELens release whose layout `export_saelens` writes (tests load it with that release)."""

_REFUSED_ARCHS = {
    "abstopk": "its codes keep the sign of the pre-activation (top k by |h|); clipsae codes are >= 0",
    "transcoder": "a transcoder reconstructs another hook's output, not its input",
    "skip_transcoder": "a transcoder reconstructs another hook's output, not its input",
    "jumprelu_transcoder": "a transcoder reconstructs another hook's output, not its input",
    "jumprelu_skip_transcoder": "a transcoder reconstructs another hook's output, not its input",
    "temporal": "its encoder attends over the sequence; clipsae SAEs read one vector at a time",
    "matching_pursuit": "its codes come from an iterative pursuit, not one encoder pass",
}
_TENSORS = {
    "standard": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
    "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold", "log_threshold"},
    "gated": {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"},
    "batchtopk": {"W_enc", "b_enc", "W_dec", "b_dec", "topk_threshold"},
    "matryoshka_batchtopk": {"W_enc", "b_enc", "W_dec", "b_dec", "topk_threshold"},
}


def is_saelens_dir(src: Path) -> bool:
    """A folder with SAELens's cfg.json + sae_weights.safetensors that is not one of ours."""
    if not ((src / CFG).is_file() and (src / WEIGHTS).is_file()):
        return False
    try:
        return json.loads((src / CFG).read_text()).get("format") != "clipsae-sae"
    except (OSError, ValueError, AttributeError):
        return True


# ---------------------------------------------------------------- in
def _legacy(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """A config written before SAELens 6, read as SAELens's `handle_pre_6_0_config` reads it."""
    renames = {
        "hook_point": "hook_name",
        "hook_point_head_index": "hook_head_index",
        "activation_fn_str": "activation_fn",
    }
    cfg = {renames.get(k, k): v for k, v in cfg.items()}
    cfg.setdefault("architecture", "standard")
    cfg.setdefault("apply_b_dec_to_input", True)
    act = cfg.get("activation_fn") or "relu"
    if act == "topk":
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if kwargs.get("k") is None:
            raise Refused(f"{where}: activation_fn='topk' without activation_fn_kwargs.k")
        cfg["architecture"], cfg["k"] = "topk", kwargs["k"]
    elif act != "relu":
        raise Refused(
            f"{where}: activation_fn={act!r} is not relu or topk (SAELens 6 would load it as "
            "its architecture's own activation, silently); refused"
        )
    norm = cfg.get("normalize_activations")
    if isinstance(norm, bool):
        cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    elif norm is None:
        cfg["normalize_activations"] = "none"
    meta_keys = ("model_name", "hook_name", "hook_head_index", "context_size", "dataset_path", "prepend_bos")
    cfg["metadata"] = {k: cfg[k] for k in meta_keys if k in cfg}
    return cfg


def _version(cfg: dict[str, Any]) -> tuple[int, ...]:
    raw = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version") or ""
    parts = []
    for piece in str(raw).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def read_saelens(src: Path, norm_scaling_factor: float | None = None) -> Draft:
    """A SAELens folder as a Draft in our convention (every fold recorded)."""
    where = str(src / CFG)
    source = read_json(src / CFG)
    cfg = source if _version(source) >= (6,) else _legacy(source, where)
    arch = cfg.get("architecture")
    if arch in _REFUSED_ARCHS:
        raise Refused(f"{where}: architecture={arch!r} is refused: {_REFUSED_ARCHS[arch]}")
    if arch not in _TENSORS:
        raise Refused(f"{where}: unknown SAELens architecture {arch!r}; clipsae reads {', '.join(sorted(_TENSORS))}")
    meta = dict(cfg.get("metadata") or {})
    for key in ("hook_name", "model_name", "hook_head_index"):
        if key in cfg and key not in meta:
            meta[key] = cfg[key]
    if meta.get("hook_head_index") is not None:
        raise Refused(
            f"{where}: hook_head_index={meta['hook_head_index']!r}: an SAE on one attention head has no clipsae hook"
        )
    if cfg.get("reshape_activations", "none") != "none":
        raise Refused(
            f"{where}: reshape_activations={cfg['reshape_activations']!r} (per-head hook_z inputs) has no clipsae hook"
        )
    t = {k: v.to(torch.float64) for k, v in read_safetensors(src / WEIGHTS).items()}
    _legacy_scaling_factor(t, where)
    check_keys(t, _TENSORS[arch], str(src / WEIGHTS), f"SAELens architecture {arch!r}")
    draft = _draft(arch, cfg, t, str(src / WEIGHTS))
    _fold_normalisation(draft, cfg, src, norm_scaling_factor)
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if (d_in, d_sae) != (draft.d_in, draft.d_sae):
        raise Refused(f"{where}: d_in={d_in!r}, d_sae={d_sae!r} but W_enc is {[draft.d_in, draft.d_sae]}")
    draft.metadata.update(_provenance(meta, source))
    return draft


def _legacy_scaling_factor(t: dict[str, torch.Tensor], where: str) -> None:
    """SAELens drops an all-ones `scaling_factor` tensor and cannot load any other one."""
    if "scaling_factor" in t:
        if not torch.equal(t["scaling_factor"], torch.ones_like(t["scaling_factor"])):
            raise Refused(
                f"{where}: a finetuning scaling_factor other than 1 is refused (SAELens 6 cannot load it either)"
            )
        del t["scaling_factor"]


def _draft(arch: str, cfg: dict[str, Any], t: dict[str, torch.Tensor], where: str) -> Draft:
    apply_b_dec = cfg.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b_dec, bool):
        raise Refused(f"{where}: apply_b_dec_to_input={apply_b_dec!r} is not true or false")
    if arch == "gated":
        need(t, ("W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"), where)
        b_gate, b_mag = t["b_gate"], t["b_mag"]
        folds = []
        if not apply_b_dec:  # both encoder paths read x without b_dec subtracted
            b_gate = b_gate + t["b_dec"] @ t["W_enc"]
            b_mag = b_mag + t["b_dec"] @ (t["W_enc"] * t["r_mag"].exp())
            folds.append("b_gate, b_mag += b_dec @ W (apply_b_dec_to_input=false)")
        w, b, theta = gated_to_jumprelu(t["W_enc"], b_gate, t["r_mag"], b_mag)
        draft = Draft("jumprelu", w, b, t["W_dec"], t["b_dec"], threshold=theta, folds=folds)
        draft.folds.append("gated encoder as jumprelu: W_enc·e^r_mag, b_mag, θ = b_mag − e^r_mag·b_gate")
        return draft
    need(t, ("W_enc", "b_enc", "W_dec", "b_dec"), where)
    draft = Draft("relu" if arch == "standard" else arch, t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"])
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        # SAELens's inference TopK defaults to False, its training classes (the only ones
        # batchtopk and matryoshka have) to True.
        rescale = cfg.get("rescale_acts_by_decoder_norm", arch != "topk")
        if rescale:
            draft.fold_decoder_norms("rescale_acts_by_decoder_norm=true")
    if not apply_b_dec:
        draft.fold_input_bias("apply_b_dec_to_input=false")
    if arch == "topk":
        draft.k = integral(cfg.get("k"), "k", where)
    elif arch == "jumprelu":
        if "threshold" in t:
            draft.threshold = t["threshold"]
        elif "log_threshold" in t:
            draft.threshold = t["log_threshold"].exp()
            draft.folds.append("threshold = exp(log_threshold)")
        else:
            need(t, ("threshold",), where)
    elif arch in ("batchtopk", "matryoshka_batchtopk"):
        need(t, ("topk_threshold",), where)
        draft.threshold = torch.full((draft.d_sae,), float(t["topk_threshold"].reshape(-1)[0]), dtype=torch.float64)
        k = cfg.get("k")
        if isinstance(k, (int, float)) and not isinstance(k, bool) and k > 0 and float(k) == int(k):
            draft.architecture, draft.k = "batchtopk", int(k)
        else:  # a fractional mean k: the inference rule (one threshold) is all that is left
            draft.architecture = "jumprelu"
        draft.folds.append(f"{arch} at inference: the threshold topk_threshold, as SAELens saves it")
    return draft


def _fold_normalisation(draft: Draft, cfg: dict[str, Any], src: Path, factor: float | None) -> None:
    norm = cfg.get("normalize_activations", "none")
    where = str(src / CFG)
    if factor is not None and norm != "expected_average_only_in":
        raise Refused(
            f"{where}: --norm-scaling-factor {factor!r} is for normalize_activations="
            f"'expected_average_only_in'; this SAE's is {norm!r}, which the factor would not enter"
        )
    if norm == "none":
        return
    if norm == "layer_norm":
        draft.normalize, draft.layer_norm_variant = "layer_norm", "saelens"
    elif norm == "constant_norm_rescale":  # x·√d/‖x‖ = √d · (our unit_norm)
        draft.normalize = "unit_norm"
        draft.fold_input_scale(math.sqrt(draft.d_in), "constant_norm_rescale = unit_norm × √d_in")
    elif norm == "expected_average_only_in":
        factor = _scaling_factor(src, factor)
        if factor is None:
            raise Refused(
                f"{where}: normalize_activations='expected_average_only_in' but the scaling factor is not "
                f"folded and there is no {SCALER} with it beside cfg.json (SAELens applies nothing at "
                "inference, so the codes would be wrong); pass --norm-scaling-factor F (SAELens's "
                "pretrained_saes.yaml lists it for published SAEs)"
            )
        draft.fold_input_scale(float(factor), "normalize_activations=expected_average_only_in")
    elif norm == "covariance_whitening":
        if not (src / WHITENING).is_file():
            raise Refused(
                f"{where}: normalize_activations='covariance_whitening' but {WHITENING} is missing, "
                "so the whitening cannot be folded"
            )
        w = read_safetensors(src / WHITENING)
        need(w, ("mean", "matrix", "inverse_matrix"), str(src / WHITENING))
        draft.fold_input_affine(w["mean"], w["matrix"], w["inverse_matrix"], "covariance_whitening")
    else:
        raise Refused(f"{where}: normalize_activations={norm!r} is not one SAELens defines")


def _scaling_factor(src: Path, given: float | None) -> float | None:
    """The factor of `activation_scaler.json` beside cfg.json, else the one given; both present
    and different is refused by name (which one the SAE was trained with is not ours to guess)."""
    if not (src / SCALER).is_file():
        return given
    recorded = read_json(src / SCALER).get("scaling_factor")
    if isinstance(recorded, bool) or not isinstance(recorded, (int, float)) or not recorded > 0:
        raise Refused(f"{src / SCALER}: scaling_factor={recorded!r} is not a positive number")
    if given is not None and float(given) != float(recorded):
        raise Refused(
            f"{src / SCALER} records scaling_factor={recorded!r} but --norm-scaling-factor is {given!r}: "
            f"the file is what SAELens's trainer used; drop the flag (or give the same value)"
        )
    return float(recorded)


def _provenance(meta: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """Our metadata: the hook in our spelling (the source's kept beside it), the model's name."""
    out: dict[str, Any] = {"converted_from": "sae-lens", "source_cfg": source}
    ours = meta.get("clipsae_metadata")
    if isinstance(ours, dict):  # a folder we exported: restore our provenance
        out.update(ours)
    hook = meta.get("hook_name")
    if isinstance(hook, str) and "hook_name" not in out:
        out["hook_name"] = canonical_hook(hook) or hook
        if out["hook_name"] != hook:
            out["source_hook_name"] = hook
    if meta.get("model_name") and "model_name" not in out:
        out["source_model_name"] = meta["model_name"]
    return out


# ---------------------------------------------------------------- out
def saelens_form(sae: SparseAutoencoder) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(cfg.json dict, tensors) of the SAELens SAE that equals `sae`, or a Refused naming why."""
    c = sae.cfg
    t = {n: getattr(sae, n).detach().to("cpu", torch.float64) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if c.architecture == "relu":
        arch = "standard"
    elif c.architecture == "topk":
        arch = "topk"
    elif c.architecture in THRESHOLD_ARCHS:  # jumprelu, and batchtopk's inference rule
        arch = "jumprelu"
        t["threshold"] = sae.threshold_s.detach().to("cpu", torch.float64)  # type: ignore[union-attr]
    else:
        raise Refused(f"architecture {c.architecture!r} has no SAELens inference equivalent")
    norm = c.normalize_activations
    if norm == "unit_norm":  # constant_norm_rescale reads √d·x/‖x‖: fold 1/√d
        s = math.sqrt(c.d_in)
        t["W_enc"], t["b_dec"], t["W_dec"] = t["W_enc"] / s, t["b_dec"] * s, t["W_dec"] * s
        norm = "constant_norm_rescale"
    elif norm == "expected_average_only_in":  # SAELens ignores the factor at inference: fold it
        s = float(c.norm_scaling_factor)  # type: ignore[arg-type]
        t["W_enc"], t["b_dec"], t["W_dec"] = t["W_enc"] * s, t["b_dec"] / s, t["W_dec"] / s
        norm = "none"
    elif norm == "centred_unit_norm":
        raise Refused(
            "normalize_activations=centred_unit_norm ((x − c)/‖x − c‖) has no SAELens formula, and a "
            "per-input scale cannot be folded into weights (train with --normalize none or unit_norm to export)"
        )
    elif norm == "layer_norm" and c.layer_norm_variant != "saelens":
        raise Refused(
            f"normalize_activations=layer_norm with layer_norm_variant={c.layer_norm_variant!r} "
            "(biased std + 1e-6) has no SAELens formula (SAELens: unbiased std + 1e-5)"
        )
    meta: dict[str, Any] = {
        "sae_lens_version": SAELENS_LAYOUT_VERSION,
        "sae_lens_training_version": None,
        "clipsae_metadata": c.metadata,
    }
    model = c.metadata.get("model_name") or c.metadata.get("source_model_name")
    hook = c.metadata.get("source_hook_name") or c.metadata.get("hook_name")
    if model is not None:
        meta["model_name"] = str(model)
    if hook is not None:  # SAELens and Prisma name hooks the TransformerLens way
        meta["hook_name"] = saelens_hook(str(hook))
    cfg = {
        "architecture": arch,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": norm,
        "reshape_activations": "none",
        "metadata": meta,
    }
    if arch == "topk":
        cfg.update(k=c.k, rescale_acts_by_decoder_norm=False)
    return cfg, {k: v.float().contiguous() for k, v in t.items()}


def export_saelens(sae: SparseAutoencoder, dst: Path) -> Path:
    """Write `sae` as a SAELens folder at `dst` (atomically)."""
    cfg, tensors = saelens_form(sae)

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CFG).write_text(json.dumps(cfg, indent=2))

    return atomic_write_dir(dst, fill)
