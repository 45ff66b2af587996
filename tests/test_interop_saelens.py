"""SAELens (the live library, sae-lens 6.54.12) in both directions: SAEs built and saved with
SAELens's own classes and save code convert to ours with the same codes and reconstructions
(< 1e-4, TopK index sets identical); ours exported load in `SAE.load_from_disk` and agree."""

from __future__ import annotations

import json
import math

import pytest
import torch

from interop_helpers import assert_close, assert_codes_close, clear_rows, inputs, randomize
from sae_core.config import SAEConfig
from sae_core.interop import Hints, Refused, convert, export_sae
from sae_core.io import load_sae, save_sae
from sae_core.sae import SparseAutoencoder

sae_lens = pytest.importorskip("sae_lens")
from sae_lens import SAE  # noqa: E402
from sae_lens.saes import (  # noqa: E402
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    GatedSAE,
    GatedSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.training.activation_scaler import ActivationScaler  # noqa: E402

D, S, K = 64, 256, 12


def their_pre(sae, x: torch.Tensor) -> torch.Tensor:
    """SAELens's pre-activation, by its own process_sae_in (and decoder-norm rescale)."""
    with torch.no_grad():
        pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc
        if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
            pre = pre * sae.W_dec.norm(dim=-1)
        return pre


def build(cls, cfg_cls, seed: int, **cfg):
    sae = cls(cfg_cls(d_in=D, d_sae=S, **cfg))
    randomize(sae, seed, D)
    return sae.eval()


def converted(tmp_path, sae, name: str = "theirs", **hints) -> SparseAutoencoder:
    sae.save_model(str(tmp_path / name))
    layout, written = convert(tmp_path / name, tmp_path / f"{name}_ours", Hints(**hints))
    assert layout == "sae-lens" and len(written) == 1
    return load_sae(tmp_path / f"{name}_ours")


# ---------------------------------------------------------------- SAELens -> ours
@pytest.mark.parametrize("norm", ["none", "layer_norm", "constant_norm_rescale"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_standard_imports_exactly(tmp_path, norm, apply_b_dec):
    theirs = build(StandardSAE, StandardSAEConfig, 1, normalize_activations=norm, apply_b_dec_to_input=apply_b_dec)
    ours = converted(tmp_path, theirs)
    assert ours.cfg.architecture == "relu"
    x = inputs(D)
    with torch.no_grad():
        assert_codes_close(ours.encode(x), theirs.encode(x))
        assert_close(ours(x).x_hat_bd, theirs(x))


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("norm", ["none", "layer_norm"])
def test_topk_imports_with_identical_index_sets(tmp_path, rescale, norm):
    theirs = build(
        TopKSAE,
        TopKSAEConfig,
        2,
        k=K,
        rescale_acts_by_decoder_norm=rescale,
        normalize_activations=norm,
        apply_b_dec_to_input=not rescale,
    )
    with torch.no_grad():
        theirs.W_dec.mul_(torch.rand(S, 1, generator=torch.Generator().manual_seed(3)).add(0.2) * 3)
    ours = converted(tmp_path, theirs)
    x = inputs(D, seed=11)
    pre = their_pre(theirs, x)
    with torch.no_grad():
        assert_codes_close(ours.encode(x), theirs.encode(x), pre=pre, k=K)
        assert_close(ours(x).x_hat_bd, theirs(x), rows=clear_rows(pre, k=K))


@pytest.mark.parametrize("norm", ["none", "layer_norm"])
def test_jumprelu_imports_exactly(tmp_path, norm):
    theirs = build(JumpReLUSAE, JumpReLUSAEConfig, 4, normalize_activations=norm, apply_b_dec_to_input=False)
    ours = converted(tmp_path, theirs)
    assert ours.cfg.architecture == "jumprelu"
    x = inputs(D, seed=12)
    pre = their_pre(theirs, x)
    with torch.no_grad():
        assert_codes_close(ours.encode(x), theirs.encode(x), pre=pre, theta=theirs.threshold)
        assert_close(ours(x).x_hat_bd, theirs(x), rows=clear_rows(pre, theta=theirs.threshold))


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_gated_imports_as_the_equal_jumprelu(tmp_path, apply_b_dec):
    theirs = build(GatedSAE, GatedSAEConfig, 5, apply_b_dec_to_input=apply_b_dec)
    ours = converted(tmp_path, theirs)
    assert ours.cfg.architecture == "jumprelu"
    x = inputs(D, seed=13)
    with torch.no_grad():
        gate = theirs.process_sae_in(x) @ theirs.W_enc + theirs.b_gate
        assert_codes_close(ours.encode(x), theirs.encode(x), pre=gate, theta=torch.zeros(S))
        assert_close(ours(x).x_hat_bd, theirs(x), rows=clear_rows(gate, theta=torch.zeros(S)))


def test_batchtopk_training_checkpoint_imports_as_saelens_inference_form(tmp_path):
    cfg = BatchTopKTrainingSAEConfig(d_in=D, d_sae=S, k=K)
    assert cfg.rescale_acts_by_decoder_norm  # SAELens's training default, folded on import
    theirs = BatchTopKTrainingSAE(cfg)
    randomize(theirs, 6, D)
    theirs.topk_threshold = torch.tensor(0.35, dtype=torch.double)
    theirs.save_model(str(tmp_path / "ckpt"))  # the training checkpoint (architecture batchtopk)
    theirs.save_inference_model(str(tmp_path / "inference"))  # what SAELens itself serves: jumprelu
    reference = SAE.load_from_disk(str(tmp_path / "inference")).eval()
    assert reference.cfg.architecture() == "jumprelu"
    convert(tmp_path / "ckpt", tmp_path / "ours")
    ours = load_sae(tmp_path / "ours")
    assert ours.cfg.architecture == "batchtopk" and ours.cfg.k == K
    x = inputs(D, seed=14)
    pre = their_pre(reference, x)
    with torch.no_grad():
        assert_codes_close(ours.encode(x), reference.encode(x), pre=pre, theta=reference.threshold)
        assert_close(ours(x).x_hat_bd, reference(x), rows=clear_rows(pre, theta=reference.threshold))
        # and in training mode the batch rule picks the same k·B (input, latent) pairs as SAELens's
        ours.train()
        f_train = ours.activate(ours.pre_activation(x))
        theirs_train = theirs.encode(x)
    assert torch.equal(f_train != 0, theirs_train != 0)


def test_expected_average_only_in_folds_the_trainer_scaling_factor(tmp_path):
    theirs = build(TopKTrainingSAE, TopKTrainingSAEConfig, 7, k=K, normalize_activations="expected_average_only_in")
    theirs.save_model(str(tmp_path / "ckpt"))
    ActivationScaler(scaling_factor=0.37).save(str(tmp_path / "ckpt/activation_scaler.json"))
    convert(tmp_path / "ckpt", tmp_path / "ours")
    ours = load_sae(tmp_path / "ours")
    x = inputs(D, seed=15)
    with torch.no_grad():  # what SAELens's trainer computes: the SAE on scaled inputs, unscaled out
        f_ref = theirs.encode(x * 0.37)
        x_ref = theirs.decode(f_ref) / 0.37
        pre = their_pre(theirs, x * 0.37)
        assert_codes_close(ours.encode(x), f_ref, pre=pre, k=K)
        assert_close(ours(x).x_hat_bd, x_ref, rows=clear_rows(pre, k=K))


def test_a_scaling_factor_flag_that_disagrees_with_the_scaler_file_is_refused(tmp_path):
    theirs = build(StandardSAE, StandardSAEConfig, 17, normalize_activations="expected_average_only_in")
    theirs.save_model(str(tmp_path / "ckpt"))
    ActivationScaler(scaling_factor=0.37).save(str(tmp_path / "ckpt/activation_scaler.json"))
    with pytest.raises(
        Refused,
        match=r"activation_scaler.json records scaling_factor=0.37 but "
        r"--norm-scaling-factor is 2.0",
    ):
        convert(tmp_path / "ckpt", tmp_path / "ours", Hints(norm_scaling_factor=2.0))
    assert not (tmp_path / "ours").exists()
    convert(tmp_path / "ckpt", tmp_path / "ours", Hints(norm_scaling_factor=0.37))  # the same value: fine
    with torch.no_grad():
        assert_codes_close(load_sae(tmp_path / "ours").encode(inputs(D)), theirs.encode(0.37 * inputs(D)))
    (tmp_path / "ckpt/activation_scaler.json").write_text('{"scaling_factor": "0.37"}')
    with pytest.raises(Refused, match="scaling_factor='0.37' is not a positive number"):
        convert(tmp_path / "ckpt", tmp_path / "ours2")
    plain = build(StandardSAE, StandardSAEConfig, 18, normalize_activations="layer_norm")
    plain.save_model(str(tmp_path / "plain"))
    with pytest.raises(
        Refused,
        match="--norm-scaling-factor 2.0 is for normalize_activations='expected_average_only_in'; "
        "this SAE's is 'layer_norm'",
    ):
        convert(tmp_path / "plain", tmp_path / "ours3", Hints(norm_scaling_factor=2.0))


def test_expected_average_only_in_without_its_factor_is_refused(tmp_path):
    theirs = build(StandardSAE, StandardSAEConfig, 8, normalize_activations="expected_average_only_in")
    theirs.save_model(str(tmp_path / "theirs"))
    with pytest.raises(Refused, match="expected_average_only_in.*--norm-scaling-factor"):
        convert(tmp_path / "theirs", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()
    convert(tmp_path / "theirs", tmp_path / "ours", Hints(norm_scaling_factor=2.0))
    x = inputs(D)
    with torch.no_grad():
        assert_codes_close(load_sae(tmp_path / "ours").encode(x), theirs.encode(2.0 * x))


def test_covariance_whitening_is_folded(tmp_path):
    theirs = build(StandardSAE, StandardSAEConfig, 9, normalize_activations="covariance_whitening")
    theirs.save_model(str(tmp_path / "ckpt"))
    scaler = ActivationScaler()
    data = iter(
        [inputs(D, n=512, seed=s) @ torch.randn(D, D, generator=torch.Generator().manual_seed(1)) / 8 for s in range(4)]
    )
    scaler.estimate_whitening(D, data, n_batches_for_norm_estimate=4)
    scaler.save(str(tmp_path / "ckpt/activation_scaler.json"))
    convert(tmp_path / "ckpt", tmp_path / "ours")
    ours = load_sae(tmp_path / "ours")
    x = inputs(D, seed=16)
    with torch.no_grad():
        f_ref = theirs.encode(scaler.scale(x))
        assert_codes_close(ours.encode(x), f_ref)
        assert_close(ours(x).x_hat_bd, scaler.unscale(theirs.decode(f_ref)))


def test_pre_6_config_reads_as_saelens_reads_it(tmp_path):
    theirs = build(TopKSAE, TopKSAEConfig, 10, k=K)
    theirs.save_model(str(tmp_path / "old"))
    cfg = {
        "d_in": D,
        "d_sae": S,
        "dtype": "float32",
        "hook_point": "blocks.9.hook_resid_post",
        "model_name": "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": K},
        "normalize_activations": False,
        "apply_b_dec_to_input": True,
    }
    (tmp_path / "old/cfg.json").write_text(json.dumps(cfg))
    reference = SAE.load_from_disk(str(tmp_path / "old")).eval()  # SAELens's own reading of it
    convert(tmp_path / "old", tmp_path / "ours")
    ours = load_sae(tmp_path / "ours")
    assert ours.cfg.metadata["hook_name"] == "blocks.9.resid_post"
    assert ours.cfg.metadata["source_hook_name"] == "blocks.9.hook_resid_post"
    x = inputs(D, seed=17)
    with torch.no_grad():
        assert_codes_close(ours.encode(x), reference.encode(x), pre=their_pre(reference, x), k=K)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architecture": "abstopk", "k": 4}, "abstopk.*sign"),
        ({"architecture": "transcoder", "d_out": D}, "transcoder"),
        ({"reshape_activations": "hook_z"}, "reshape_activations='hook_z'"),
        (
            {"metadata": {"hook_name": "blocks.3.attn.hook_z", "hook_head_index": 2, "sae_lens_version": "6.54.12"}},
            "hook_head_index=2",
        ),
        ({"normalize_activations": "covariance_whitening"}, "activation_whitening.safetensors is missing"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(tmp_path, change, message):
    build(StandardSAE, StandardSAEConfig, 11).save_model(str(tmp_path / "theirs"))
    cfg = json.loads((tmp_path / "theirs/cfg.json").read_text())
    cfg.update(change)
    (tmp_path / "theirs/cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(Refused, match=message):
        convert(tmp_path / "theirs", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


def test_an_unknown_tensor_is_refused(tmp_path):
    build(StandardSAE, StandardSAEConfig, 12).save_model(str(tmp_path / "theirs"))
    from safetensors.torch import load_file, save_file

    t = load_file(str(tmp_path / "theirs/sae_weights.safetensors"))
    t["W_skip"] = torch.zeros(D, D)
    save_file(t, str(tmp_path / "theirs/sae_weights.safetensors"))
    with pytest.raises(Refused, match="unknown tensor.*W_skip"):
        convert(tmp_path / "theirs", tmp_path / "ours")


# ---------------------------------------------------------------- ours -> SAELens
def ours_random(arch: str, normalize: str = "none", seed: int = 0, metadata: dict | None = None) -> SparseAutoencoder:
    kw = {"norm_scaling_factor": 0.42} if normalize == "expected_average_only_in" else {}
    cfg = SAEConfig(
        d_in=D,
        d_sae=S,
        architecture=arch,
        k=K if arch in ("topk", "batchtopk") else None,
        normalize_activations=normalize,
        metadata=metadata or {},
        **kw,
    )
    sae = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(seed))
    randomize(sae, seed + 100, D)
    return sae.eval()


@pytest.mark.parametrize("normalize", ["none", "layer_norm", "unit_norm", "expected_average_only_in"])
@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu", "batchtopk"])
def test_ours_exported_load_in_saelens_and_agree(tmp_path, arch, normalize):
    ours = ours_random(arch, normalize, seed=len(arch) + len(normalize))
    save_sae(ours, tmp_path / "ours")
    export_sae(tmp_path / "ours", tmp_path / "theirs", "saelens")
    theirs = SAE.load_from_disk(str(tmp_path / "theirs")).eval()
    expected = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}[arch]
    assert theirs.cfg.architecture() == expected
    x = inputs(D, seed=21)
    with torch.no_grad():
        pre = ours.pre_activation(ours.normalize(x)[0])
        theta = ours.threshold_s
        k = K if arch == "topk" else None
        assert_codes_close(theirs.encode(x), ours.encode(x), pre=pre, theta=theta, k=k)
        assert_close(theirs(x), ours(x).x_hat_bd, rows=clear_rows(pre, theta=theta, k=k))


def test_export_refuses_the_old_layer_norm_variant(tmp_path):
    sae = ours_random("relu", "layer_norm")
    sae.cfg = SAEConfig.from_dict({**sae.cfg.to_dict(), "layer_norm_variant": "clipsae-v1"})
    save_sae(sae, tmp_path / "ours")
    with pytest.raises(Refused, match="clipsae-v1.*no SAELens formula"):
        export_sae(tmp_path / "ours", tmp_path / "theirs", "saelens")
    assert not (tmp_path / "theirs").exists()


def test_round_trip_keeps_our_provenance(tmp_path):
    meta = {
        "model_name": "ViT-B-32",
        "pretrained": "datacomp_xl_s13b_b90k",
        "hook_name": "blocks.9.resid_post",
        "tokens": "all",
    }
    save_sae(ours_random("topk", metadata=meta), tmp_path / "ours")
    export_sae(tmp_path / "ours", tmp_path / "theirs", "saelens")
    assert SAE.load_from_disk(str(tmp_path / "theirs")).cfg.metadata.hook_name == "blocks.9.hook_resid_post"
    convert(tmp_path / "theirs", tmp_path / "back")
    back = load_sae(tmp_path / "back")
    assert {k: back.cfg.metadata[k] for k in meta} == meta


def test_our_layer_norm_is_saelens_layer_norm():
    theirs = build(StandardSAE, StandardSAEConfig, 13, normalize_activations="layer_norm")
    ours = ours_random("relu", "layer_norm")
    x = inputs(D, seed=22) * 3
    with torch.no_grad():
        x_norm, ctx = ours.normalize(x)
        assert_close(x_norm, theirs.run_time_activation_norm_fn_in(x), "normalised inputs")
        y = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        assert_close(ours.denormalize(y, ctx), theirs.run_time_activation_norm_fn_out(y), "denormalised outputs")


def test_native_cfg_has_no_null_hook_and_unit_norm_exports_as_constant_norm_rescale(tmp_path):
    save_sae(ours_random("relu", "unit_norm"), tmp_path / "ours")
    cfg = json.loads((tmp_path / "ours/cfg.json").read_text())
    assert "hook_name" not in cfg and "model_name" not in cfg  # unknown provenance: omitted, never null
    export_sae(tmp_path / "ours", tmp_path / "theirs", "saelens")
    theirs_cfg = json.loads((tmp_path / "theirs/cfg.json").read_text())
    assert theirs_cfg["normalize_activations"] == "constant_norm_rescale"
    assert math.isclose(
        SAE.load_from_disk(str(tmp_path / "theirs")).W_dec.norm(dim=1).mean().item(),
        math.sqrt(D) * load_sae(tmp_path / "ours").W_dec.norm(dim=1).mean().item(),
        rel_tol=1e-5,
    )
