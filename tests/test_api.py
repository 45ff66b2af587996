"""The SAE's Python API: one pre-activation for every caller, and encode/decode in the input space."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from sae_core.config import SAEConfig
from sae_core.sae import SparseAutoencoder

REPO = Path(__file__).resolve().parents[1]
D, S, K = 24, 40, 5


def _sae(arch: str, normalize: str = "none", seed: int = 3) -> SparseAutoencoder:
    kw = {"norm_scaling_factor": 0.37} if normalize == "expected_average_only_in" else {}
    cfg = SAEConfig(d_in=D, d_sae=S, architecture=arch, k=K if arch in ("topk", "batchtopk") else None,
                    normalize_activations=normalize, **kw)
    sae = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(D, S, generator=g) / D ** 0.5)
        sae.b_enc.copy_(torch.randn(S, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(D, generator=g) + 2.0)  # a large shared mean, as real activations have
        if arch in ("jumprelu", "batchtopk"):
            sae.threshold.copy_(torch.rand(S, generator=g) * 0.3)
    return sae.eval()


def _x(n: int = 33, seed: int = 11) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g) + 2.0
    x[::10] *= 10  # rare rows with ~10x the norm
    return x


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, code) of a module, without its docstrings and comments."""
    text = path.read_text()
    docs = {n for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for n in range(node.lineno, node.end_lineno + 1)}
    return [(i, line.split("#")[0]) for i, line in enumerate(text.splitlines(), 1) if i not in docs]


def test_no_module_writes_the_pre_activation_itself():
    """h = (x − b_dec) @ W_enc + b_enc lives in `SparseAutoencoder.pre_activation` only (the sparse
    backward and the importers' weight folds are not pre-activations)."""
    product = re.compile(r"(@\s*[\w.]*W_enc|W_enc[\w.\[\]:, ]*\]?\s*@|(addmm|einsum|matmul|mm)\([^)]*W_enc)")
    skip = {"sae_core/sparse_ops.py"}
    found = [f"{p.relative_to(REPO)}:{i}" for pkg in ("sae_core", "precompute", "evaluation", "app")
             for p in sorted((REPO / pkg).rglob("*.py"))
             if str(p.relative_to(REPO)) not in skip and "interop" not in p.parts
             for i, line in _code_lines(p) if product.search(line)]
    assert not found, found
    assert product.search("h = (x - b) @ sae.W_enc + c") and product.search("torch.addmm(b, x, self.W_enc)")


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "batchtopk", "topk"])
@pytest.mark.parametrize("normalize", ["none", "layer_norm", "unit_norm"])
def test_every_layout_of_the_pre_activation_is_the_same_function(arch, normalize):
    sae = _sae(arch, normalize)
    x = _x()
    with torch.no_grad():
        x_norm = sae.normalize(x)[0]
        h = sae.pre_activation(x_norm)
        expected = ((x_norm.double() - sae.b_dec.double()) @ sae.W_enc.double() + sae.b_enc.double())
        assert torch.allclose(h.double(), expected, atol=1e-4)
        cols = torch.tensor([3, 17, 0, 39])
        assert torch.allclose(sae.pre_activation(x_norm, cols), h[:, cols], atol=1e-5)
        assert torch.allclose(sae.pre_activation(x_norm, slice(5, 9), latent_major=True), h[:, 5:9].T, atol=1e-5)
        codes = sae.elementwise_codes(x)
        if arch == "topk":  # each latent by itself: its drive, relu(h)
            assert torch.allclose(codes, h.clamp_min(0), atol=1e-5)
        else:  # the inference codes themselves
            assert torch.allclose(codes, sae.encode(x), atol=1e-5)
        assert torch.allclose(sae.elementwise_codes(x, cols, latent_major=True), codes[:, cols].T, atol=1e-5)
