"""EleutherAI sparsify (the live library, eai-sparsify 1.3.3) in both directions: SparseCoders
saved with `save_to_disk` convert to ours with identical top-k index sets and codes and
reconstructions < 1e-4; ours exported load with `SparseCoder.load_from_disk` and agree."""

from __future__ import annotations

import json

import pytest
import torch

from interop_helpers import assert_close, assert_codes_close, clear_rows, inputs, randomize
from sae_core.config import SAEConfig
from sae_core.interop import Refused, convert, export_sae
from sae_core.io import load_sae, save_sae
from sae_core.sae import SparseAutoencoder

sparsify = pytest.importorskip("sparsify")
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402

D, S, K = 64, 256, 16


def coder(seed: int, **cfg) -> SparseCoder:
    sae = SparseCoder(D, SparseCoderConfig(num_latents=S, k=K, **cfg))
    randomize(sae, seed, D)
    return sae.eval()


def their_dense(sae: SparseCoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes as a dense matrix, pre-activations, reconstruction) by sparsify's encode/decode."""
    with torch.no_grad():
        top_acts, top_idx, pre = sae.encode(x)
        f = torch.zeros(x.shape[0], S).scatter_(1, top_idx, top_acts)
        return f, pre, sae.decode(top_acts, top_idx)


def test_sparsify_folder_imports_with_identical_index_sets(tmp_path):
    theirs = coder(1)
    theirs.save_to_disk(tmp_path / "theirs")
    layout, _ = convert(tmp_path / "theirs", tmp_path / "ours")
    assert layout == "sparsify"
    ours = load_sae(tmp_path / "ours")
    x = inputs(D, seed=3)
    f, pre, x_hat = their_dense(theirs, x)
    with torch.no_grad():
        assert_codes_close(ours.encode(x), f, pre=pre, k=K)
        assert_close(ours(x).x_hat_bd, x_hat, rows=clear_rows(pre, k=K))


def test_trainer_folder_converts_one_sae_per_hookpoint(tmp_path):
    run = tmp_path / "run"
    for i, hook in enumerate(["vision_model.encoder.layers.3", "vision_model.encoder.layers.5.mlp"]):
        coder(10 + i).save_to_disk(run / hook)
    (run / "config.json").write_text(json.dumps({"sae": {"k": K}, "hookpoints": ["*"], "model": "tiny-clip"}))
    # save_best: per-hookpoint losses give best/<hookpoint>/<hookpoint>/, one loss best/<hookpoint>/
    coder(12).save_to_disk(run / "best/vision_model.encoder.layers.3/vision_model.encoder.layers.3")
    coder(13).save_to_disk(run / "best/vision_model.encoder.layers.5.mlp")
    layout, written = convert(run, tmp_path / "ours")
    assert layout == "sparsify-trainer" and len(written) == 4
    hooks = {str(p.relative_to(tmp_path / "ours")): load_sae(p).cfg.metadata for p, _ in written}
    assert {k: m["hook_name"] for k, m in hooks.items()} == {
        "vision_model.encoder.layers.3": "blocks.3.resid_post",
        "vision_model.encoder.layers.5.mlp": "blocks.5.mlp_out",
        "best/vision_model.encoder.layers.3/vision_model.encoder.layers.3": "blocks.3.resid_post",
        "best/vision_model.encoder.layers.5.mlp": "blocks.5.mlp_out",
    }
    assert {m["source_hook_name"] for m in hooks.values()} == {
        "vision_model.encoder.layers.3",
        "vision_model.encoder.layers.5.mlp",
    }
    x = inputs(D, seed=4)
    f, pre, _ = their_dense(SparseCoder.load_from_disk(run / "vision_model.encoder.layers.3"), x)
    with torch.no_grad():
        assert_codes_close(load_sae(tmp_path / "ours/vision_model.encoder.layers.3").encode(x), f, pre=pre, k=K)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"activation": "groupmax"}, "activation='groupmax' is refused"),
        ({"skip_connection": True}, "skip_connection=true"),
        ({"transcode": True}, "transcode=true"),
    ],
)
def test_what_sparsify_does_that_we_cannot_is_refused(tmp_path, cfg, message):
    coder(2, **cfg).save_to_disk(tmp_path / "theirs")
    with pytest.raises(Refused, match=message):
        convert(tmp_path / "theirs", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


@pytest.mark.parametrize("normalize", ["none", "expected_average_only_in"])
def test_ours_exported_load_in_sparsify_and_agree(tmp_path, normalize):
    kw = {"norm_scaling_factor": 0.6} if normalize == "expected_average_only_in" else {}
    ours = SparseAutoencoder(
        SAEConfig(d_in=D, d_sae=S, architecture="topk", k=K, normalize_activations=normalize, **kw)
    )
    randomize(ours, 5, D)
    ours.eval()
    save_sae(ours, tmp_path / "ours")
    export_sae(tmp_path / "ours", tmp_path / "theirs", "sparsify")
    theirs = SparseCoder.load_from_disk(tmp_path / "theirs")
    x = inputs(D, seed=6)
    f, pre, x_hat = their_dense(theirs, x)
    with torch.no_grad():
        assert_codes_close(ours.encode(x), f, pre=pre, k=K)
        assert_close(ours(x).x_hat_bd, x_hat, rows=clear_rows(pre, k=K))


@pytest.mark.parametrize(
    ("arch", "normalize", "message"),
    [
        ("relu", "none", "sparsify has TopK"),
        ("topk", "layer_norm", "no input normalisation"),
    ],
)
def test_export_to_sparsify_refuses_what_it_cannot_hold(tmp_path, arch, normalize, message):
    sae = SparseAutoencoder(
        SAEConfig(d_in=D, d_sae=S, architecture=arch, k=K if arch == "topk" else None, normalize_activations=normalize)
    )
    save_sae(sae, tmp_path / "ours")
    with pytest.raises(Refused, match=message):
        export_sae(tmp_path / "ours", tmp_path / "theirs", "sparsify")
