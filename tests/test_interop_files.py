"""saev, dictionary-learning and overcomplete: libraries that cannot share our environment.
Their files in tests/fixtures/interop/ were written by their own classes and save code in side
environments (tests/fixtures/interop/make_fixtures.py: saev 0.1.0, dictionary-learning 0.1.0,
overcomplete 0.3.0), together with the codes and reconstructions their code computed; the
tests convert those files with ours and compare (< 1e-4, TopK index sets identical)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interop_helpers import assert_close, assert_codes_close, clear_rows
from sae_core.interop import Hints, Refused, convert
from sae_core.io import load_sae

FIXTURES = Path(__file__).parent / "fixtures" / "interop"
K = 4


@pytest.fixture()
def spy_torch_load(monkeypatch):
    """Every torch.load our converters make, with its keyword arguments."""
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def check(sae_dir: Path, expected_dir: Path, theta: torch.Tensor | None = None, k: int | None = None) -> None:
    sae = load_sae(sae_dir)
    e = load_file(str(expected_dir / "expected.safetensors"))
    with torch.no_grad():
        pre = sae.pre_activation(sae.normalize(e["x"])[0])
        assert_codes_close(sae.encode(e["x"]), e["f"], pre=pre, theta=theta, k=k)
        assert_close(sae(e["x"]).x_hat_bd, e["x_hat"], rows=clear_rows(pre, theta=theta, k=k))


def test_saev_sae_pt(tmp_path, spy_torch_load):
    layout, written = convert(FIXTURES / "saev/sae.pt", tmp_path / "ours")
    assert layout == "saev" and spy_torch_load and all(c.get("weights_only") is True for c in spy_torch_load)
    meta = written[0][1].cfg.metadata
    assert "input scaling" in meta["not_recorded_by_source"] and "hook_name" not in meta
    check(tmp_path / "ours", FIXTURES / "saev")


@pytest.mark.parametrize(
    "cls",
    [
        "AutoEncoder",
        "AutoEncoderNew",
        "GatedAutoEncoder",
        "JumpReluAutoEncoder",
        "AutoEncoderTopK",
        "BatchTopKSAE",
        "MatryoshkaBatchTopKSAE",
    ],
)
def test_dictionary_learning_trainer_folder(tmp_path, cls, spy_torch_load):
    layout, written = convert(FIXTURES / "dictionary_learning" / cls, tmp_path / "ours")
    assert layout == "dictionary-learning" and all(c.get("weights_only") is True for c in spy_torch_load)
    sae = written[0][1]
    arch = {
        "GatedAutoEncoder": "jumprelu",
        "JumpReluAutoEncoder": "jumprelu",
        "AutoEncoderTopK": "topk",
        "BatchTopKSAE": "batchtopk",
        "MatryoshkaBatchTopKSAE": "batchtopk",
    }.get(cls, "relu")
    assert sae.cfg.architecture == arch  # a JumpReLU never becomes a ReLU
    theta = sae.threshold_s.detach() if sae.threshold_s is not None else None
    if cls == "GatedAutoEncoder":  # the jump is where the gate opens
        theta = sae.threshold_s.detach()
    check(tmp_path / "ours", FIXTURES / "dictionary_learning" / cls, theta=theta, k=K if arch == "topk" else None)


def test_dictionary_learning_ae_pt_alone_names_its_config(tmp_path):
    src = tmp_path / "trainer_0"
    shutil.copytree(FIXTURES / "dictionary_learning/BatchTopKSAE", src)
    layout, _ = convert(src / "ae.pt", tmp_path / "ours")
    assert layout == "dictionary-learning"
    (src / "config.json").unlink()
    shutil.copy(src / "ae.pt", tmp_path / "renamed.pt")
    for given, what in (
        (src / "ae.pt", "the tensors of AutoEncoderTopK or BatchTopKSAE"),
        (tmp_path / "renamed.pt", "the tensors of AutoEncoderTopK or BatchTopKSAE"),
        (src, "a dictionary-learning ae.pt"),
    ):
        with pytest.raises(Refused, match=rf"{what}, but there is no config.json beside it: .*trainer.dict_class"):
            convert(given, tmp_path / "ours2")
    (src / "config.json").write_text('{"lr": 0.001}')
    with pytest.raises(Refused, match="its config.json has no 'trainer' section"):
        convert(src, tmp_path / "ours2")
    assert not (tmp_path / "ours2").exists()


def test_a_truncated_saev_file_says_it_is_truncated(tmp_path):
    data = (FIXTURES / "saev/sae.pt").read_bytes()
    header = data.index(b"\n") + 1
    for cut in (header + 10, (header + len(data)) // 2, len(data) - 20):  # the old messages: "negative seek value"
        (tmp_path / "sae.pt").write_bytes(data[:cut])
        with pytest.raises(Refused, match=r"sae.pt is truncated or damaged: it begins as a torch.save zip archive"):
            convert(tmp_path / "sae.pt", tmp_path / "ours")
    (tmp_path / "sae.pt").write_bytes(data[:header])
    with pytest.raises(Refused, match="sae.pt is empty"):
        convert(tmp_path / "sae.pt", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


@pytest.mark.parametrize(
    ("name", "arch", "k"), [("SAE", "relu", None), ("TopKSAE", "topk", K), ("JumpSAE", "jumprelu", None)]
)
def test_overcomplete_state_dict(tmp_path, name, arch, k, spy_torch_load):
    layout, written = convert(
        FIXTURES / "overcomplete" / name / "state_dict.pt", tmp_path / "ours", Hints(arch=arch, k=k)
    )
    assert layout == "overcomplete" and all(c.get("weights_only") is True for c in spy_torch_load)
    theta = written[0][1].threshold_s
    check(tmp_path / "ours", FIXTURES / "overcomplete" / name, theta=None if theta is None else theta.detach(), k=k)


def test_overcomplete_needs_what_it_does_not_record(tmp_path):
    src = FIXTURES / "overcomplete/TopKSAE/state_dict.pt"
    with pytest.raises(Refused, match="does not record its class.*--arch"):
        convert(src, tmp_path / "ours")
    with pytest.raises(Refused, match="does not save top_k; pass --k"):
        convert(src, tmp_path / "ours", Hints(arch="topk"))
    with pytest.raises(Refused, match="running_threshold"):
        convert(src, tmp_path / "ours", Hints(arch="batchtopk"))
    with pytest.raises(ValueError, match="--k is not for a saev source"):
        convert(FIXTURES / "saev/sae.pt", tmp_path / "ours", Hints(k=4))
    assert not (tmp_path / "ours").exists()


def test_convert_and_export_sae_through_the_cli(tmp_path, capsys):
    from app.cli import main

    src = FIXTURES / "dictionary_learning/JumpReluAutoEncoder"
    assert main(["convert", str(src), str(tmp_path / "ours")]) == 0
    out = capsys.readouterr().out
    assert "converted dictionary-learning SAE (jumprelu" in out and "folded: b_enc += b_dec @ W_enc" in out
    assert main(["export-sae", str(tmp_path / "ours"), str(tmp_path / "theirs"), "--to", "saelens"]) == 0
    assert (tmp_path / "theirs/sae_weights.safetensors").is_file()
    assert main(["export-sae", str(tmp_path / "ours"), str(tmp_path / "sp"), "--to", "sparsify"]) != 0
    assert "sparsify has TopK" in capsys.readouterr().err
    assert main(["convert", str(FIXTURES / "overcomplete/SAE/state_dict.pt"), str(tmp_path / "oc")]) != 0
    assert "pass --arch" in capsys.readouterr().err and not (tmp_path / "oc").exists()
