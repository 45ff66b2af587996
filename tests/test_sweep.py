"""Sweeps over k, λ and seed in one pass: each SAE equals the one trained alone, resume stays
exact, the CLI names one sub-folder per combination.

Equality is bitwise (torch.equal): an SAE of a sweep runs the same operations on the same
batches, in the same order and on the same threads, as the run that trains it alone; the
sweep's SAEs share only the read-only batch tensor, so no reduction order can differ."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sae_core.config import SAEConfig, TrainConfig
from sae_core.sweep import make_specs
from sae_core.train import train

from helpers import kill_training_at


QUIET = dict(checkpoint_every=0, log_every=10**9, init_rows=512)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "sae_weights.safetensors"))


def _equal(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[n], wb[n]) for n in wa)


def test_make_specs_names_every_combination_by_the_values_that_vary():
    base = SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2)
    specs = make_specs(base, [0.0], [2, 4], [0, 1])
    assert [s.name for s in specs] == ["k_2_seed_0", "k_2_seed_1", "k_4_seed_0", "k_4_seed_1"]
    assert [(s.cfg.k, s.seed) for s in specs] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    assert [s.name for s in make_specs(base, [0.0], [4], [3, 5])] == ["seed_3", "seed_5"]
    assert "seed" not in make_specs(base, [0.0], [4])[0].to_dict()  # older checkpoints' specs still match
    with pytest.raises(ValueError, match="each seed once"):
        make_specs(base, [0.0], [4], [1, 1])


def test_a_k_by_seed_sweep_trains_each_sae_exactly_as_alone(tmp_path, small_npy):
    base = SAEConfig(d_in=16, d_sae=48, architecture="topk", k=2)
    # AuxK on (latents dead after 200 rows): every per-SAE piece of state is exercised
    cfg = TrainConfig(batch_size=64, epochs=1, lr=3e-3, dead_after_samples=200, seed=0, **QUIET)
    paths = train(small_npy, tmp_path / "sweep", make_specs(base, [0.0], [2, 4], [0, 1]), cfg)
    assert [p.name for p in paths] == ["k_2_seed_0", "k_2_seed_1", "k_4_seed_0", "k_4_seed_1"]
    for path, (k, seed) in zip(paths, [(2, 0), (2, 1), (4, 0), (4, 1)]):
        alone_cfg = dataclasses.replace(cfg, seed=seed, data_seed=0)  # the sweep's batches follow the first seed
        [alone] = train(small_npy, tmp_path / f"alone_{k}_{seed}", make_specs(base, [0.0], [k]), alone_cfg)
        assert _equal(path, alone), path.name
    assert not torch.equal(_weights(paths[0])["W_dec"], _weights(paths[1])["W_dec"])  # the seed changes the init


def test_a_seed_sweep_resumes_exactly(tmp_path, small_npy, monkeypatch):
    """relu with resampling: each SAE's own generator (seeded by its seed) is checkpointed."""
    base = SAEConfig(d_in=16, d_sae=48, architecture="relu")
    specs = make_specs(base, [0.1, 1.0], [None], [0, 1])
    cfg = TrainConfig(
        batch_size=64,
        epochs=2,
        block_rows=256,
        chunk_rows=96,
        lr=3e-3,
        lr_warmup_steps=5,
        checkpoint_every=10,
        resample_every=7,
        dead_after_samples=200,
        log_every=5,
        init_rows=512,
    )
    full = train(small_npy, tmp_path / "full", specs, cfg)
    kill_training_at(monkeypatch, 25, small_npy, tmp_path / "resumed", specs, cfg)
    with pytest.raises(ValueError, match="different specs"):  # another seed list is another run
        train(small_npy, tmp_path / "resumed", make_specs(base, [0.1, 1.0], [None], [0, 2]), cfg, resume=True)
    resumed = train(small_npy, tmp_path / "resumed", specs, cfg, resume=True)
    assert [p.name for p in resumed] == ["l1_0.1_seed_0", "l1_0.1_seed_1", "l1_1_seed_0", "l1_1_seed_1"]
    for a, b in zip(full, resumed):
        assert _equal(a, b), a.name


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_seed_list_sweeps_and_data_seed_reproduces_one_of_them(tmp_path, small_npy):
    common = [
        "--acts",
        small_npy,
        "--arch",
        "topk",
        "--d-sae",
        "32",
        "--batch-size",
        "200",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--init-rows",
        "512",
    ]
    r = run_cli("train", *common, "--out", str(tmp_path / "s"), "--k", "2,4", "--seed", "0,1")
    assert r.returncode == 0, r.stderr
    assert sorted(p.parent.name for p in (tmp_path / "s").glob("*/cfg.json")) == [
        "k_2_seed_0",
        "k_2_seed_1",
        "k_4_seed_0",
        "k_4_seed_1",
    ]
    r = run_cli("train", *common, "--out", str(tmp_path / "one"), "--k", "4", "--seed", "1", "--data-seed", "0")
    assert r.returncode == 0, r.stderr
    assert _equal(tmp_path / "s/k_4_seed_1", tmp_path / "one")
    r = run_cli("train", *common, "--out", str(tmp_path / "bad"), "--k", "4", "--seed", "1,1")
    assert r.returncode == 2 and "each seed once" in r.stderr
