"""overcomplete (KempnerInstitute) SAE state dicts, with a documented key mapping.

overcomplete saves `model.state_dict()` only: the class, `top_k` and the dictionary's
normalisation are not in the file, so `--arch` (relu for SAE, topk for TopKSAE, jumprelu for
JumpSAE, batchtopk for BatchTopKSAE) and, for topk, `--k` must be given; the dictionary
normalisation is the library's default `l2` unless `--dictionary-norm` says otherwise.
Only the default linear encoder is read:

| overcomplete key | clipsae |
|---|---|
| `encoder.final_block.0.weight` [s, d] (or untied `encoder.weight`) | `W_enc` = its transpose |
| `encoder.final_block.0.bias` [s] (or `encoder.bias`) | `b_enc` |
| `dictionary._weights` [s, d], `dictionary.multiplier` [] | `W_dec` = norm(_weights)·e^multiplier (eval mode) |
| `thresholds` [s] (JumpSAE) | `threshold` = e^thresholds |
| (none) | `b_dec` = 0: overcomplete has no decoder bias |

Refused: other encoders (MLP, attention, ResNet), tied encoders, BatchTopKSAE without its
`running_threshold` (overcomplete keeps it as a plain attribute, so state_dict does not
save it). overcomplete keeps codes at h >= θ where we keep h > θ: they differ only for a
pre-activation exactly equal to θ.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import read_safetensors
from .common import Draft, Refused, check_keys, integral, load_pt, need, tensor_dict

NORMS = {
    "l2": lambda w: w / (w.norm(p=2, dim=1, keepdim=True) + 1e-8),
    "max_l2": lambda w: w / w.norm(p=2, dim=1, keepdim=True).amax(dim=0, keepdim=True),
    "l1": lambda w: w / (w.norm(p=1, dim=1, keepdim=True) + 1e-8),
    "max_l1": lambda w: w / w.norm(p=1, dim=1, keepdim=True).amax(dim=0, keepdim=True),
    "identity": lambda w: w,
}
"""overcomplete's DictionaryLayer normalisations, by the names its constructor takes."""


def load_state(src: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a .pt/.pth (weights_only=True)."""
    if src.suffix == ".safetensors":
        return read_safetensors(src)
    return tensor_dict(load_pt(src, str(src)), str(src))


def is_overcomplete_state(state: dict[str, torch.Tensor]) -> bool:
    return "dictionary._weights" in state


def read_overcomplete(src: Path, arch: str | None, k: int | None, dictionary_norm: str = "l2") -> Draft:
    """An overcomplete state dict as a Draft; `arch` and `k` come from the user."""
    t = {key: v.to(torch.float64) for key, v in load_state(src).items()}
    where = str(src)
    if arch not in ("relu", "topk", "jumprelu", "batchtopk"):
        raise Refused(
            f"{where}: an overcomplete state dict does not record its class: pass --arch relu (SAE), "
            "topk (TopKSAE, with --k), jumprelu (JumpSAE) or batchtopk (BatchTopKSAE)"
        )
    if dictionary_norm not in NORMS:
        raise Refused(f"{where}: --dictionary-norm {dictionary_norm!r} is not one of {', '.join(NORMS)}")
    prefix = "encoder.final_block.0." if "encoder.final_block.0.weight" in t else "encoder."
    extra = {"thresholds"} if arch == "jumprelu" else {"running_threshold"} if arch == "batchtopk" else set()
    known = {f"{prefix}weight", f"{prefix}bias", "dictionary._weights", "dictionary.multiplier"} | extra
    check_keys(t, known, where, f"an overcomplete {arch} SAE with the linear encoder")
    if arch == "batchtopk" and "running_threshold" not in t:
        raise Refused(
            f"{where}: BatchTopKSAE's inference threshold running_threshold is a plain attribute that "
            "state_dict() does not save, so its eval-mode codes cannot be reproduced; add it to the "
            "state dict as 'running_threshold'"
        )
    need(t, tuple(sorted(known)), where)
    dictionary = NORMS[dictionary_norm](t["dictionary._weights"]) * t["dictionary.multiplier"].exp()
    d = dictionary.shape[1]
    draft = Draft(
        "relu" if arch in ("relu",) else arch,
        t[f"{prefix}weight"].T,
        t[f"{prefix}bias"],
        dictionary,
        torch.zeros(d, dtype=torch.float64),
    )
    if arch == "topk":
        if k is None:
            raise Refused(f"{where}: TopKSAE does not save top_k; pass --k")
        draft.k = integral(k, "--k", where)
    elif k is not None:
        raise Refused(f"--k is for --arch topk, not {arch}")
    if arch == "jumprelu":
        draft.threshold = t["thresholds"].exp()
    if arch == "batchtopk":
        draft.threshold = torch.full((draft.d_sae,), float(t["running_threshold"].reshape(-1)[0]), dtype=torch.float64)
        draft.architecture = "jumprelu"  # top_k is not saved either; the threshold is the inference rule
    draft.metadata = {
        "converted_from": "overcomplete",
        "source_dictionary_norm": dictionary_norm,
        "source_architecture": arch,
    }
    return draft
