"""SparseAutoencoder: each architecture's activation rule, normalisation, decoder-norm upkeep."""

import pytest
import torch

from sae_core.config import ARCHITECTURES, K_ARCHS, NORMALIZATIONS, SAEConfig
from sae_core.init import geometric_median
from sae_core.losses import auxk_loss
from sae_core.sae import SparseAutoencoder


def make(arch: str, d: int = 8, s: int = 32, k: int | None = 4, **kw) -> SparseAutoencoder:
    if arch == "matryoshka":
        kw.setdefault("groups", (s // 8, s // 2, s))
    return SparseAutoencoder(
        SAEConfig(d_in=d, d_sae=s, architecture=arch, k=k if arch in K_ARCHS else None, **kw),
        generator=torch.Generator().manual_seed(0),
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_shapes_and_reconstruction_formula(arch):
    sae = make(arch)
    x = torch.randn(10, 8)
    out = sae(x)
    assert out.x_hat_bd.shape == (10, 8) and out.f_bs.shape == (10, 32)
    # reconstruction is exactly f @ W_dec + b_dec (no normalisation configured)
    torch.testing.assert_close(out.x_hat_bd, out.f_bs @ sae.W_dec + sae.b_dec)
    torch.testing.assert_close(out.mse, ((out.x_hat_bd - x) ** 2).mean())
    assert (out.f_bs >= 0).all()


def test_topk_keeps_the_k_largest_positive_preactivations():
    sae = make("topk", k=4)
    x = torch.randn(50, 8)
    f = sae.encode(x)
    h = sae.pre_activation(x)
    assert ((f > 0).sum(dim=1) <= 4).all()
    expected = torch.zeros_like(h)
    vals, idx = h.sort(dim=1, descending=True)
    expected.scatter_(1, idx[:, :4], vals[:, :4].clamp_min(0))
    torch.testing.assert_close(f, expected)


def test_batchtopk_keeps_k_times_batch_in_training_and_uses_threshold_at_inference():
    sae = make("batchtopk", k=3)
    x = torch.randn(20, 8)
    sae.train()
    f = sae.encode(x)
    h = sae.pre_activation(x)
    assert int((f > 0).sum()) == min(60, int((h > 0).sum()))
    # the kept values are the 60 largest of relu(h) over the whole batch
    kept = f[f > 0].sort().values
    torch.testing.assert_close(kept, h.flatten().sort().values[-60:])
    sae.update_batchtopk_threshold_(f, momentum=0.9)
    theta = float(kept.detach().min())
    assert torch.allclose(sae.threshold, torch.full_like(sae.threshold, theta))
    sae.eval()
    f_inf = sae.encode(x)
    torch.testing.assert_close(f_inf, h * (h > theta))


def test_jumprelu_threshold_and_straight_through_gradient():
    sae = make("jumprelu", jumprelu_bandwidth=0.05)
    with torch.no_grad():
        sae.threshold.fill_(0.1)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    out = sae(x)
    h = sae.pre_activation(x)
    torch.testing.assert_close(out.f_bs, h * (h > 0.1))
    torch.testing.assert_close(out.sparsity, (h > 0.1).float().mean())
    out.sparsity.backward()
    # ∂/∂θ of mean H(h − θ) by the rectangle kernel: −(1/ε)·#{|h − θ| < ε/2} / (B·d_sae)
    near = ((h - 0.1).abs() < 0.025).float().sum(dim=0)
    assert near.sum() > 0
    torch.testing.assert_close(sae.threshold.grad, -near / 0.05 / h.numel())


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_normalisation_is_undone_on_the_output(mode):
    kw = {"norm_scaling_factor": 2.5} if mode == "expected_average_only_in" else {}
    centre = torch.linspace(-2, 2, 8)
    if mode == "centred_unit_norm":
        kw = {"norm_centre": tuple(centre.tolist())}
    sae = make("relu", normalize_activations=mode, **kw)
    x = torch.randn(6, 8) * 3 + 1
    x_norm, ctx = sae.normalize(x)
    expected = x
    if mode == "layer_norm":  # SAELens's formula: in (x − μ)/(σ + 1e-5), out y·σ + μ (not quite inverse)
        mu, std = x.mean(1, keepdim=True), x.std(1, keepdim=True)
        expected = mu + (x - mu) * std / (std + 1e-5)
    torch.testing.assert_close(sae.denormalize(x_norm, ctx), expected, rtol=1e-5, atol=1e-5)
    if mode == "unit_norm":
        torch.testing.assert_close(x_norm.norm(dim=1), torch.ones(6))
    if mode == "centred_unit_norm":  # (x − c)/‖x − c‖, computed here independently
        torch.testing.assert_close(x_norm, (x - centre) / (x - centre).norm(dim=1, keepdim=True))


def test_parallel_gradient_removed_and_decoder_renormalised():
    sae = make("relu")
    sae(torch.randn(16, 8)).mse.backward()
    sae.remove_parallel_grads_()
    dots = (sae.W_dec.grad * sae.W_dec).sum(dim=1)
    assert dots.abs().max() < 1e-6
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(32))


def test_auxk_uses_only_dead_latents():
    sae = make("topk", k=2)
    out = sae(torch.randn(16, 8))
    dead = torch.zeros(32, dtype=torch.bool)
    assert float(auxk_loss(sae, out, dead, k_aux=4)) == 0.0
    dead[:5] = True
    loss = auxk_loss(sae, out, dead, k_aux=4)
    loss.backward()
    # only the dead latents' encoder columns receive gradient from the aux loss
    assert sae.W_enc.grad[:, 5:].abs().sum() == 0
    assert sae.W_enc.grad[:, :5].abs().sum() > 0


def test_geometric_median_is_robust_to_outliers():
    x = torch.zeros(101, 3)
    x[:, 0] = torch.linspace(-1, 1, 101)
    x[-5:] = 1000.0  # outliers drag the mean, not the median
    gm = geometric_median(x)
    assert gm.norm() < 0.2 < x.mean(dim=0).norm()


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"architecture": "gated"}, "architecture must be one of"),
        ({"architecture": "topk"}, "needs 0 < k"),
        ({"architecture": "relu", "k": 4}, "only used by topk"),
        ({"normalize_activations": "zscore"}, "normalize_activations must be one of"),
        ({"d_sae": 0}, "must be positive"),
    ],
)
def test_config_rejects_bad_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SAEConfig(**{"d_in": 8, "d_sae": 16, **kw})


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_training_path_matches_dense_reference(arch):
    """The training forward of topk/batchtopk (sparse backward) equals the dense computation."""
    g = torch.Generator().manual_seed(0)
    sae = make(arch, d=16, s=64, k=5)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(16, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(64, generator=g))
    x = torch.randn(40, 16, generator=g)
    sae.train()
    out = sae(x)  # sparse path
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    loss = out.mse + auxk_loss(sae, out, dead, k_aux=6)
    grads = torch.autograd.grad(loss, [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec])

    # dense reference, written from the definitions
    h = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    if arch == "topk":
        keep = torch.zeros_like(h, dtype=torch.bool).scatter_(1, h.topk(5, dim=1).indices, True)
    else:
        keep = torch.zeros(h.numel(), dtype=torch.bool)
        keep[h.flatten().topk(5 * 40).indices] = True
        keep = keep.view_as(h)
    f = torch.relu(h) * keep
    x_hat = f @ sae.W_dec + sae.b_dec
    resid = (x - x_hat).detach()
    h_dead = h.masked_fill(~dead, float("-inf"))
    aux_keep = torch.zeros_like(h, dtype=torch.bool).scatter_(1, h_dead.topk(6, dim=1).indices, True)
    e_hat = (torch.relu(h) * aux_keep) @ sae.W_dec
    aux = (e_hat - resid).pow(2).mean() * min(int(dead.sum()) / 6, 1.0)  # in the MSE's units
    ref_loss = (x_hat - x).pow(2).mean() + aux
    ref = torch.autograd.grad(ref_loss, [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec])

    torch.testing.assert_close(out.f_bs, f.detach())
    torch.testing.assert_close(loss, ref_loss)
    for name, a, b in zip(["W_enc", "b_enc", "W_dec", "b_dec"], grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"{arch} grad {name}")


def test_sparse_relu_path_matches_dense_path():
    """Once ReLU codes are sparse, training switches to the sparse path; values and
    gradients (MSE + L1) must equal the dense path's."""
    g = torch.Generator().manual_seed(0)
    sae = make("relu", d=16, s=64)
    with torch.no_grad():
        sae.b_enc.fill_(-2.0)  # most latents off: a realistic trained density
        sae.b_dec.copy_(torch.randn(16, generator=g))
    x = torch.randn(40, 16, generator=g)
    sae.train()
    dense = sae(x)
    density = float((dense.f_bs > 0).float().mean())
    assert dense.f_dense_bs is not None and 0 < density < 0.2
    sae.note_density(density / 10)  # below SPARSE_RELU_DENSITY: the next forward is sparse
    sparse = sae(x)
    assert sparse.coords is not None
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    g_dense = torch.autograd.grad(dense.mse + 0.5 * dense.sparsity, params)
    g_sparse = torch.autograd.grad(sparse.mse + 0.5 * sparse.sparsity, params)
    torch.testing.assert_close(sparse.f_bs, dense.f_bs.detach())
    torch.testing.assert_close(sparse.sparsity, dense.sparsity)
    for a, b in zip(g_sparse, g_dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- matryoshka
def _matryoshka(d: int = 12, s: int = 48, k: int = 4, groups=(6, 18, 48), seed: int = 3) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(seed)
    sae = make("matryoshka", d=d, s=s, k=k, groups=groups)
    with torch.no_grad():
        sae.b_dec.copy_(0.3 * torch.randn(d, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(s, generator=g))
    return sae.train()


def test_matryoshka_prefix_losses_match_sae_lens():
    """Our training forward against SAELens' own MatryoshkaBatchTopKTrainingSAE on the same weights:
    the same batch top-k latents, and each prefix's loss (SAELens sums the squared error over
    d_in and averages over the batch; ours is the mean over both, so ×d_in)."""
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import TrainStepInput

    ours = _matryoshka()
    theirs = MatryoshkaBatchTopKTrainingSAE(
        MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=12, d_sae=48, k=4, matryoshka_widths=[6, 18, 48], rescale_acts_by_decoder_norm=False
        )
    )
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(theirs, name).copy_(getattr(ours, name))
    x = torch.randn(30, 12, generator=torch.Generator().manual_seed(1))
    out = ours(x)
    ref = theirs.training_forward_pass(
        TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False)
    )
    torch.testing.assert_close(out.f_bs, ref.feature_acts.detach())
    expected = torch.stack([ref.losses["inner_mse_loss_6"], ref.losses["inner_mse_loss_18"], ref.losses["mse_loss"]])
    torch.testing.assert_close(out.prefix_mse_g * 12, expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.recon_loss * 12, ref.loss.detach(), rtol=1e-5, atol=1e-6)


def test_matryoshka_sparse_training_gradients_match_dense_definition():
    sae = _matryoshka()
    x = torch.randn(30, 12, generator=torch.Generator().manual_seed(2))
    out = sae(x)
    assert out.coords is not None and out.prefix_mse_g.shape == (3,)
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    grads = torch.autograd.grad(out.recon_loss, params)
    # from the definitions: the k·B largest relu(h) of the batch, then Σ over prefixes g of mean (x̂_g − x)²
    h = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    keep = torch.zeros(h.numel(), dtype=torch.bool)
    keep[h.flatten().topk(4 * 30).indices] = True
    f = torch.relu(h) * keep.view_as(h)
    ref_loss = sum(((f[:, :g] @ sae.W_dec[:g] + sae.b_dec - x) ** 2).mean() for g in (6, 18, 48))
    ref = torch.autograd.grad(ref_loss, params)
    torch.testing.assert_close(out.recon_loss, ref_loss)
    for name, a, b in zip(["W_enc", "b_enc", "W_dec", "b_dec"], grads, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"grad {name}")


def test_matryoshka_infers_like_batchtopk_and_decodes_each_prefix():
    sae = _matryoshka()
    sae.update_batchtopk_threshold_(torch.tensor([0.2, 0.5]), momentum=0.9)
    sae.eval()
    x = torch.randn(7, 12, generator=torch.Generator().manual_seed(4))
    h = sae.pre_activation(x)
    f = sae.encode(x)
    torch.testing.assert_close(f, h * (h > 0.2))
    prefixes = sae.prefix_reconstructions(f)
    assert len(prefixes) == 3
    torch.testing.assert_close(prefixes[0], f[:, :6] @ sae.W_dec[:6] + sae.b_dec)
    torch.testing.assert_close(prefixes[-1], sae.decode(f), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_round_trip_every_architecture(tmp_path, arch):
    import json

    from sae_core.io import load_sae, save_sae

    sae = _matryoshka() if arch == "matryoshka" else make(arch)
    if arch in ("batchtopk", "matryoshka"):
        sae.update_batchtopk_threshold_(torch.tensor([0.25]), momentum=0.9)
    save_sae(sae, tmp_path / "s")
    back = load_sae(tmp_path / "s")
    assert back.cfg == sae.cfg
    saved = json.loads((tmp_path / "s/cfg.json").read_text())
    assert saved["groups"] == ([6, 18, 48] if arch == "matryoshka" else None)
    for name, t in sae.state_dict().items():
        if name != "relu_density":  # training-only state, not part of the file
            assert torch.equal(t, back.state_dict()[name]), name
    x = torch.randn(5, sae.cfg.d_in)
    assert torch.equal(sae.eval().encode(x), back.encode(x))


@pytest.mark.parametrize(
    "groups,msg",
    [(None, "needs groups"), ((8, 4, 48), "increasing"), ((6, 18), "ending at d_sae"), ((0, 48), "increasing")],
)
def test_matryoshka_config_rejects_bad_groups(groups, msg):
    with pytest.raises(ValueError, match=msg):
        SAEConfig(d_in=8, d_sae=48, architecture="matryoshka", k=4, groups=groups)
    with pytest.raises(ValueError, match="only used by matryoshka"):
        SAEConfig(d_in=8, d_sae=48, architecture="batchtopk", k=4, groups=(6, 48))


def test_fused_adam_and_clipping_equal_torch_optim():
    """sae_core.adam runs torch's fused Adam kernel without torch.optim (whose first use imports
    torch._dynamo, ~2 s per command): its steps equal torch.optim.Adam(fused=True)'s exactly,
    and its clipping equals torch.nn.utils.clip_grad_norm_ (to rounding)."""
    from sae_core.adam import FusedAdam, clip_grad_norm_

    g = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(7, 5, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = FusedAdam(ours, lr=1e-2, betas=(0.8, 0.99))
    ref_opt = torch.optim.Adam(ref, lr=1e-2, betas=(0.8, 0.99), fused=True)
    for step in range(5):
        grads = [3 * torch.randn(p.shape, generator=g) for p in ours]
        for p, q, gr in zip(ours, ref, grads, strict=True):
            p.grad, q.grad = gr.clone(), gr.clone()
        norm = clip_grad_norm_(ours, 1.0)
        ref_norm = torch.nn.utils.clip_grad_norm_(ref, 1.0)
        torch.testing.assert_close(norm, ref_norm)
        for p, q in zip(ours, ref, strict=True):
            torch.testing.assert_close(p.grad, q.grad)
            q.grad.copy_(p.grad)  # the same gradients into both optimisers
        opt.lr = ref_opt.param_groups[0]["lr"] = 1e-2 / (step + 1)
        opt.step()
        ref_opt.step()
        for p, q in zip(ours, ref, strict=True):
            assert torch.equal(p, q)
    state = ref_opt.state_dict()["state"]
    for i in range(2):
        assert torch.equal(opt.exp_avg_sq[i], state[i]["exp_avg_sq"]) and float(opt.steps[i]) == 5.0
