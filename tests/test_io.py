"""Our SAE folders: bit-exact round trips, refusals of broken files, format-1 folders, no unpickling."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from sae_core.config import ARCHITECTURES, K_ARCHS, SAEConfig
from sae_core.interop import convert
from sae_core.interop.common import Refused
from sae_core.io import load_sae, save_sae
from sae_core.sae import SparseAutoencoder


def random_sae(arch: str, normalize: str = "none", d: int = 8, s: int = 24) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(1)
    kw = {"norm_scaling_factor": 1.7} if normalize == "expected_average_only_in" else {}
    cfg = SAEConfig(
        d_in=d,
        d_sae=s,
        architecture=arch,
        k=3 if arch in K_ARCHS else None,
        groups=(s // 4, s) if arch == "matryoshka" else None,
        normalize_activations=normalize,
        metadata={"model_name": "ViT-B-32", "hook_name": "embed"},
        **kw,
    )
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


# ---------------------------------------------------------------- format versions
def test_a_format_1_layer_norm_folder_keeps_its_biased_formula(tmp_path):
    """Format-1 folders normalised with the biased std + 1e-6; they must still load that way."""
    sae = random_sae("relu", "layer_norm")
    save_sae(sae, tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae/cfg.json").read_text())
    cfg["format_version"] = 1
    del cfg["layer_norm_variant"]
    (tmp_path / "sae/cfg.json").write_text(json.dumps(cfg))
    old = load_sae(tmp_path / "sae")
    assert old.cfg.layer_norm_variant == "clipsae-v1"
    x = torch.randn(6, 8, dtype=torch.float64) * 3 + 1
    mu, std = x.mean(-1, keepdim=True), x.std(-1, keepdim=True, unbiased=False) + 1e-6
    torch.testing.assert_close(old.normalize(x.float())[0].double(), (x - mu) / std, rtol=1e-5, atol=1e-5)
    assert load_sae(_resave(tmp_path, old)).cfg.layer_norm_variant == "clipsae-v1"


def _resave(tmp_path, sae):
    save_sae(sae, tmp_path / "again")
    assert json.loads((tmp_path / "again/cfg.json").read_text())["format_version"] == 2
    return tmp_path / "again"


def test_new_layer_norm_is_the_unbiased_std_plus_1e_5(tmp_path):
    sae = random_sae("relu", "layer_norm")
    assert sae.cfg.layer_norm_variant == "saelens"
    x = torch.randn(6, 8, dtype=torch.float64) * 3 + 1
    mu, std = x.mean(-1, keepdim=True), (x - x.mean(-1, keepdim=True)).std(-1, keepdim=True)
    torch.testing.assert_close(sae.normalize(x.float())[0].double(), (x - mu) / (std + 1e-5), rtol=1e-5, atol=1e-5)


def test_a_folder_of_another_tool_is_pointed_to_convert(tmp_path):
    save_sae(random_sae("relu"), tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae/cfg.json").read_text())
    del cfg["format"]
    (tmp_path / "sae/cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="clipsae convert SRC DST"):
        load_sae(tmp_path / "sae")


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
    with pytest.raises(Refused, match="was refused"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "PWNED").exists()


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="unknown SAE layout"):
        convert(tmp_path / "x", tmp_path / "y")
