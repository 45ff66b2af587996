"""SAE files: bit-exact round trips, refusals of broken files, converters, no unpickling."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from sae_core.config import ARCHITECTURES, K_ARCHS, SAEConfig
from sae_core.io import convert, load_sae, save_sae
from sae_core.sae import SparseAutoencoder


def random_sae(arch: str, normalize: str = "none", d: int = 8, s: int = 24) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(1)
    kw = {"norm_scaling_factor": 1.7} if normalize == "expected_average_only_in" else {}
    cfg = SAEConfig(d_in=d, d_sae=s, architecture=arch, k=3 if arch in K_ARCHS else None,
                    groups=(s // 4, s) if arch == "matryoshka" else None, normalize_activations=normalize, metadata={"model_name": "ViT-B-32", "hook_name": "embed"}, **kw)
    sae = SparseAutoencoder(cfg, generator=g)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        if arch in ("batchtopk", "matryoshka"):
            sae.threshold.fill_(0.25)
        if arch == "jumprelu":
            sae.threshold.abs_()
    return sae.eval()


@pytest.mark.parametrize("normalize", ["none", "unit_norm", "layer_norm", "expected_average_only_in"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_is_bit_exact(tmp_path, arch, normalize):
    sae = random_sae(arch, normalize)
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert loaded.cfg == sae.cfg
    for a, b in zip(sae.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.randn(20, 8)
    assert torch.equal(sae(x).x_hat_bd, loaded(x).x_hat_bd)
    cfg = json.loads((tmp_path / "sae/cfg.json").read_text())
    assert cfg["architecture"] == arch and cfg["d_in"] == 8 and cfg["hook_name"] == "embed"
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == ["cfg.json", "sae_weights.safetensors"]


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path):
    save_sae(random_sae("relu"), tmp_path / "sae")
    save_sae(random_sae("topk"), tmp_path / "sae")
    assert load_sae(tmp_path / "sae").cfg.architecture == "topk"
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]


def _corrupt(tmp_path, **tensors):
    save_sae(random_sae("relu"), tmp_path / "sae")
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "sae/sae_weights.safetensors"))
    t.update(tensors)
    save_file(t, str(tmp_path / "sae/sae_weights.safetensors"))
    return tmp_path / "sae"


def test_nan_weights_refused(tmp_path):
    path = _corrupt(tmp_path, b_dec=torch.full((8,), float("nan")))
    with pytest.raises(ValueError, match="b_dec contains NaN"):
        load_sae(path)


def test_shape_mismatch_refused(tmp_path):
    path = _corrupt(tmp_path, W_dec=torch.zeros(24, 9))
    with pytest.raises(ValueError, match=r"W_dec has shape \[24, 9\], expected \[24, 8\]"):
        load_sae(path)


def test_unknown_architecture_refused(tmp_path):
    save_sae(random_sae("relu"), tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae/cfg.json").read_text())
    cfg["architecture"] = "gated"
    (tmp_path / "sae/cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown architecture 'gated'"):
        load_sae(tmp_path / "sae")


# ---------------------------------------------------------------- converters
def test_convert_vit_prisma_folder(tmp_path):
    d, s = 8, 32
    g = torch.Generator().manual_seed(0)
    w = {"W_enc": torch.randn(d, s, generator=g), "W_dec": torch.randn(s, d, generator=g),
         "b_enc": torch.randn(s, generator=g), "b_dec": torch.randn(d, generator=g)}
    src = tmp_path / "prisma"
    src.mkdir()
    torch.save(w, src / "weights.pt")
    (src / "config.json").write_text(json.dumps({
        "d_in": d, "expansion_factor": 4, "activation_fn_str": "relu", "normalize_activations": "layer_norm",
        "hook_point": "blocks.9.hook_mlp_out", "model_name": "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"}))
    layout, _ = convert(src, tmp_path / "out")
    assert layout == "vit-prisma"
    sae = load_sae(tmp_path / "out")
    assert sae.cfg.normalize_activations == "layer_norm" and sae.cfg.metadata["hook_name"] == "blocks.9.hook_mlp_out"
    # Prisma's forward, written out independently: layer-norm in, relu SAE, un-normalise out
    x = torch.randn(5, d, dtype=torch.float64)
    mu, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True, unbiased=False) + 1e-6
    xn = (x - mu) / std
    f = torch.relu((xn - w["b_dec"].double()) @ w["W_enc"].double() + w["b_enc"].double())
    expected = (f @ w["W_dec"].double() + w["b_dec"].double()) * std + mu
    torch.testing.assert_close(sae(x.float()).x_hat_bd.double(), expected, rtol=1e-4, atol=1e-4)


def test_convert_sparsify_folder(tmp_path):
    d, s, k = 8, 32, 4
    g = torch.Generator().manual_seed(0)
    t = {"encoder.weight": torch.randn(s, d, generator=g), "encoder.bias": torch.randn(s, generator=g),
         "W_dec": torch.randn(s, d, generator=g), "b_dec": torch.randn(d, generator=g)}
    src = tmp_path / "sparsify"
    src.mkdir()
    save_file(t, str(src / "sae.safetensors"))
    (src / "cfg.json").write_text(json.dumps({"num_latents": s, "k": k, "d_in": d, "normalize_decoder": True}))
    layout, _ = convert(src, tmp_path / "out")
    assert layout == "sparsify"
    sae = load_sae(tmp_path / "out")
    x = torch.randn(6, d)
    # sparsify's encode: relu(encoder(x - b_dec)), keep the top k
    pre = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    vals, idx = pre.topk(k, dim=-1)
    expected = (torch.zeros(6, s).scatter(-1, idx, vals)) @ t["W_dec"] + t["b_dec"]
    torch.testing.assert_close(sae(x).x_hat_bd, expected, rtol=1e-5, atol=1e-5)


def test_convert_rejects_mismatched_prisma_shapes_and_unknown_activation(tmp_path):
    src = tmp_path / "prisma"
    src.mkdir()
    torch.save({"W_enc": torch.zeros(8, 32), "W_dec": torch.zeros(32, 7), "b_enc": torch.zeros(32),
                "b_dec": torch.zeros(8)}, src / "weights.pt")
    (src / "config.json").write_text(json.dumps({"d_in": 8, "d_sae": 32, "activation_fn_str": "relu"}))
    with pytest.raises(ValueError, match="W_dec has shape"):
        convert(src, tmp_path / "out")
    (src / "config.json").write_text(json.dumps({"d_in": 8, "d_sae": 32, "activation_fn_str": "softplus"}))
    with pytest.raises(ValueError, match="unknown activation 'softplus'"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_pickle_with_a_malicious_global_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "prisma"
    src.mkdir()
    with open(src / "weights.pt", "wb") as fh:
        pickle.dump({"W_enc": _Evil()}, fh)
    (src / "config.json").write_text(json.dumps({"d_in": 8, "d_sae": 32}))
    with pytest.raises(ValueError, match="refused"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "PWNED").exists()


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="unknown SAE layout"):
        convert(tmp_path / "x", tmp_path / "y")
