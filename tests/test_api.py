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
    cfg = SAEConfig(
        d_in=D,
        d_sae=S,
        architecture=arch,
        k=K if arch in ("topk", "batchtopk") else None,
        normalize_activations=normalize,
        **kw,
    )
    sae = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(D, S, generator=g) / D**0.5)
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
    docs = {
        n
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for n in range(node.lineno, node.end_lineno + 1)
    }
    return [(i, line.split("#")[0]) for i, line in enumerate(text.splitlines(), 1) if i not in docs]


def test_no_module_writes_the_pre_activation_itself():
    """h = (x − b_dec) @ W_enc + b_enc lives in `SparseAutoencoder.pre_activation` only (the sparse
    backward and the importers' weight folds are not pre-activations)."""
    product = re.compile(r"(@\s*[\w.]*W_enc|W_enc[\w.\[\]:, ]*\]?\s*@|(addmm|einsum|matmul|mm)\([^)]*W_enc)")
    skip = {"sae_core/sparse_ops.py"}
    found = [
        f"{p.relative_to(REPO)}:{i}"
        for pkg in ("sae_core", "precompute", "evaluation", "app")
        for p in sorted((REPO / pkg).rglob("*.py"))
        if str(p.relative_to(REPO)) not in skip and "interop" not in p.parts
        for i, line in _code_lines(p)
        if product.search(line)
    ]
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
        expected = (x_norm.double() - sae.b_dec.double()) @ sae.W_enc.double() + sae.b_enc.double()
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


# ---------------------------------------------------------------- encode / decode in the input space
NORMS = ["none", "layer_norm", "unit_norm", "expected_average_only_in"]


@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_decode_of_encode_is_the_input_space_as_in_saelens(tmp_path, arch, normalize):
    """Our SAE and the same weights loaded by the live SAELens (SAE.load_from_disk of our export:
    unit_norm as constant_norm_rescale, the scalar factor folded) give the same decode(encode(x))."""
    pytest.importorskip("sae_lens")
    from sae_lens import SAE

    from interop_helpers import clear_rows
    from sae_core.interop import export_sae
    from sae_core.io import save_sae

    ours = _sae(arch, normalize, seed=len(arch) + len(normalize))
    save_sae(ours, tmp_path / "ours")
    export_sae(tmp_path / "ours", tmp_path / "theirs", "saelens")
    theirs = SAE.load_from_disk(str(tmp_path / "theirs")).eval()
    x = _x(seed=len(normalize)) * 1.7
    with torch.no_grad():
        x_hat = ours.decode(ours.encode(x))
        rows = clear_rows(ours.pre_activation(ours.normalize(x)[0]), k=K if arch == "topk" else None)
        theirs_hat = theirs.decode(theirs.encode(x))
        relative = (x_hat - theirs_hat).double().abs().amax(dim=1) / x.double().norm(dim=1)  # rows up to 10x the norm
        assert float(relative[rows].max()) < 1e-5, float(relative[rows].max())
        assert torch.allclose(x_hat, ours(x).x_hat_bd, atol=1e-5)  # the full forward, the same function
        y = ours.decode_normalized(ours.encode(x))  # the context-free decode: the normalised space
        assert torch.allclose(y, ours(x).x_hat_norm_bd, atol=1e-5)
        if normalize != "none":
            assert (y - x_hat).abs().max() > 1.0


def test_per_input_normalisations_decode_only_what_they_can_undo():
    sae = _sae("relu", "layer_norm")
    x = _x()
    with torch.no_grad():
        f = sae.encode(x)
        edited = f.clone()
        edited[:, 3] *= 2
        _, ctx = sae.encode_with_context(x)
        assert torch.allclose(sae.decode(edited), sae.decode(edited, ctx))  # latents of that batch, edited
        with pytest.raises(ValueError, match=r"batch shape \[33\].*decode_normalized"):
            sae.decode(f[:5])  # not the batch the last encode saw
        errors: list[Exception] = []

        def other_thread() -> None:
            try:
                sae.decode(f)
            except ValueError as exc:
                errors.append(exc)
            assert torch.allclose(sae.decode(f, ctx), sae(x).x_hat_bd, atol=1e-5)  # explicit: any thread

        import threading

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert errors and "no encode in this thread" in str(errors[0])
        batch = x.reshape(3, 11, D)  # leading dimensions keep their shape
        assert torch.allclose(sae.decode(sae.encode(batch)), sae(x).x_hat_bd.reshape(3, 11, D), atol=1e-5)
    with torch.inference_mode():
        f = sae.encode(x)
    x_hat = sae.decode(f.clone())  # statistics kept under inference_mode, decoded with autograd on
    assert x_hat.requires_grad and torch.allclose(x_hat, sae(x).x_hat_bd, atol=1e-5)


@pytest.mark.parametrize("normalize", ["none", "expected_average_only_in"])
def test_constant_normalisations_decode_without_a_context(normalize):
    sae, x = _sae("topk", normalize), _x()
    f = sae.encode_with_context(x)[0]  # nothing remembered
    with torch.no_grad():
        assert torch.allclose(sae.decode(f), sae(x).x_hat_bd, atol=1e-6)


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    from sae_core.io import load_sae, save_sae

    text = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "load_sae" in b)
    assert len(block.strip().splitlines()) <= 5
    folder = re.search(r'load_sae\("([^"]+)"\)', block).group(1)
    save_sae(_sae("relu", "layer_norm"), tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    with torch.no_grad():
        assert torch.allclose(scope["x_hat"], load_sae(tmp_path / folder)(scope["x"]).x_hat_bd, atol=1e-5)
