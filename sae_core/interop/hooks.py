"""Hook names: ours, and the SAELens / ViT-Prisma (TransformerLens) spellings of the same sites.

Ours: `embed` and `blocks.L.{resid_post|mlp_out|attn_out}` (see precompute/encoders.py).
Theirs: `blocks.L.hook_resid_post`, `blocks.L.hook_mlp_out`, `blocks.L.hook_attn_out`, and
`blocks.L.hook_resid_pre`, the input of block L, which is the output of block L − 1 for L ≥ 1.
Prisma configs name the hook by `hook_point_layer` + `layer_subtype` (`hook_resid_post`).
"""

from __future__ import annotations

import re

_OURS = re.compile(r"^blocks\.(\d+)\.(resid_post|mlp_out|attn_out)$")
_THEIRS = re.compile(r"^blocks\.(\d+)\.hook_(resid_post|mlp_out|attn_out|resid_pre)$")


def canonical_hook(name: str) -> str | None:
    """Our spelling of a hook, or None when it is no hook our encoders read.

    `blocks.9.hook_resid_post` -> `blocks.9.resid_post`; `blocks.9.hook_resid_pre` ->
    `blocks.8.resid_post`; our own spellings come back unchanged."""
    if name == "embed" or _OURS.match(name):
        return name
    m = _THEIRS.match(name)
    if not m:
        return None
    layer, site = int(m.group(1)), m.group(2)
    if site == "resid_pre":
        return f"blocks.{layer - 1}.resid_post" if layer > 0 else None
    return f"blocks.{layer}.{site}"


def saelens_hook(name: str) -> str:
    """The TransformerLens spelling SAELens and ViT-Prisma use for one of our block hooks
    (`blocks.9.resid_post` -> `blocks.9.hook_resid_post`); other names come back unchanged."""
    m = _OURS.match(name)
    return f"blocks.{m.group(1)}.hook_{m.group(2)}" if m else name


def prisma_hook(layer: object, subtype: object) -> str:
    """ViT-Prisma's hook name from `hook_point_layer` + `layer_subtype`, as its config builds it."""
    if isinstance(layer, list) and len(layer) == 1:
        layer = layer[0]
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"hook_point_layer={layer!r} is not one layer index")
    return f"blocks.{layer}.{subtype}"
