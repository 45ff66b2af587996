"""saev `sae.pt` files (saev 0.1.0 `nn.dump`): one JSON header line, then the state dict.

The header (the SparseAutoencoder config: d_vit, exp_factor, sparsity_coeff, ...) is parsed
as JSON and the tensors after it with `torch.load(weights_only=True)`: nothing is
unpickled beyond plain tensors. saev's SAE is ReLU: f = relu((x − b_dec) @ W_enc + b_enc),
x̂ = f @ W_dec + b_dec, exactly ours. What saev does not save, and so we cannot know: the
input scaling of its activation loader (`scale_mean`, `scale_norm` in the data config), the
model and the layer. If the SAE was trained on scaled activations, apply the same scaling
to the inputs you encode (or fold it yourself); the hook has to be named when embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .common import Draft, Refused, check_keys, load_pt, need, tensor_dict

_HEADER_FIELDS = {
    "d_vit",
    "exp_factor",
    "sparsity_coeff",
    "n_reinit_samples",
    "ghost_grads",
    "remove_parallel_grads",
    "normalize_w_dec",
    "seed",
}
_MAX_HEADER = 1 << 20


def is_saev_file(src: Path) -> bool:
    """A file whose first line is a JSON object with saev's `d_vit`."""
    if not src.is_file():
        return False
    with open(src, "rb") as fh:
        line = fh.readline(_MAX_HEADER)
    try:
        header = json.loads(line.decode())
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(header, dict) and "d_vit" in header


def read_saev(src: Path) -> Draft:
    """A saev `sae.pt` as a Draft."""
    with open(src, "rb") as fh:
        header = json.loads(fh.readline(_MAX_HEADER).decode())
        body = fh.read()
    unknown = sorted(set(header) - _HEADER_FIELDS)
    if unknown:
        raise Refused(
            f"{src}: unknown header field(s) {', '.join(unknown)}; clipsae reads saev 0.1.0's "
            "ReLU SAE header and refuses other layouts rather than guess"
        )
    t = {k: v.to(torch.float64) for k, v in tensor_dict(load_pt(body, str(src)), str(src)).items()}
    check_keys(t, {"W_enc", "b_enc", "W_dec", "b_dec"}, str(src), "a saev SAE")
    need(t, ("W_enc", "b_enc", "W_dec", "b_dec"), str(src))
    d_vit, d_sae = t["W_enc"].shape
    if header.get("d_vit") != d_vit or d_vit * header.get("exp_factor", 0) != d_sae:
        raise Refused(
            f"{src}: header d_vit={header.get('d_vit')!r}, exp_factor={header.get('exp_factor')!r} "
            f"do not match W_enc {[d_vit, d_sae]}"
        )
    draft = Draft("relu", t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"])
    draft.metadata = {
        "converted_from": "saev",
        "source_cfg": header,
        "not_recorded_by_source": "input scaling (scale_mean, scale_norm), model, layer",
    }
    return draft
