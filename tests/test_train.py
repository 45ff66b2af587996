"""Training: dictionary recovery per architecture, exact resume, sweeps, bad data, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sae_core.trainer import SAETrainer
from sae_core.config import SAEConfig, TrainConfig
from sae_core.data import ActivationSource
from sae_core.errors import TrainingDiverged
from sae_core.evaluate import evaluate_sae
from sae_core.io import load_sae
from sae_core.sweep import make_specs
from sae_core.train import train

QUIET = dict(checkpoint_every=0, log_every=10**9, init_rows=4096)


def mean_max_cosine(atoms: np.ndarray, w_dec: np.ndarray) -> float:
    """For each true atom, the best cosine with any learned decoder row; averaged."""
    w = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
    return float((atoms @ w.T).max(axis=1).mean())


# (architecture, λ, k, epochs, extra SAEConfig fields) — budgets measured to run in seconds on 2 cores
RECOVERY = [
    ("relu", 1.0, None, 20, {}),
    ("topk", 0.0, 3, 10, {}),
    ("batchtopk", 0.0, 3, 10, {}),
    ("jumprelu", 0.3, None, 20, {}),
]


@pytest.mark.parametrize("arch,l1,k,epochs,extra", RECOVERY, ids=[r[0] for r in RECOVERY])
def test_each_architecture_recovers_a_known_dictionary(tmp_path, dict_data, arch, l1, k, epochs, extra):
    x, atoms = dict_data
    np.save(tmp_path / "x.npy", x)
    base = SAEConfig(d_in=x.shape[1], d_sae=2 * atoms.shape[0], architecture=arch, k=k, **extra)
    cfg = TrainConfig(batch_size=256, epochs=epochs, lr=1e-2, lr_warmup_steps=20, resample_every=200,
                      dead_after_samples=5000, **QUIET)
    [path] = train(tmp_path / "x.npy", tmp_path / "sae", make_specs(base, [l1], [k]), cfg)
    sae = load_sae(path)
    mmcs = mean_max_cosine(atoms, sae.W_dec.detach().numpy())
    ev = evaluate_sae(sae, ActivationSource(tmp_path / "x.npy"))["explained_variance"]
    assert mmcs >= 0.9, f"{arch}: mean max cosine {mmcs:.3f}"
    assert ev >= 0.9, f"{arch}: explained variance {ev:.3f}"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "sae_weights.safetensors"))


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, small_npy, monkeypatch, arch):
    k = 4 if arch in ("topk", "batchtopk") else None
    base = SAEConfig(d_in=16, d_sae=48, architecture=arch, k=k)
    # small blocks + resampling + AuxK + a 2nd epoch: every piece of state must survive the restart
    cfg = TrainConfig(batch_size=64, epochs=2, block_rows=256, lr=3e-3, lr_warmup_steps=5, checkpoint_every=10,
                      resample_every=7, dead_after_samples=200, log_every=5, init_rows=512)
    specs = make_specs(base, [0.1], [k])
    [full] = train(small_npy, tmp_path / "full", specs, cfg)

    real_step = SAETrainer.step

    def crash_at_25(self, x, step, *a, **kw):
        if step == 25:
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, x, step, *a, **kw)

    monkeypatch.setattr(SAETrainer, "step", crash_at_25)
    with pytest.raises(KeyboardInterrupt):
        train(small_npy, tmp_path / "resumed", specs, cfg)
    state = json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())
    assert state["step"] == 20
    monkeypatch.setattr(SAETrainer, "step", real_step)
    with pytest.raises(FileExistsError, match="--resume"):
        train(small_npy, tmp_path / "resumed", specs, cfg)
    [resumed] = train(small_npy, tmp_path / "resumed", specs, cfg, resume=True)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{arch}: {name} differs after resume"
    assert not (tmp_path / "resumed/checkpoint").exists()


def test_sweep_trains_each_sae_exactly_as_alone(tmp_path, small_npy):
    base = SAEConfig(d_in=16, d_sae=32, architecture="relu")
    cfg = TrainConfig(batch_size=128, epochs=3, lr=3e-3, **{**QUIET, "init_rows": 512})
    paths = train(small_npy, tmp_path / "sweep", make_specs(base, [1e-2, 0.3, 1.0], [None]), cfg)
    assert [p.name for p in paths] == ["l1_0.01", "l1_0.3", "l1_1"]
    [alone] = train(small_npy, tmp_path / "alone", make_specs(base, [0.3], [None]), cfg)
    for name, t in _weights(alone).items():
        assert torch.equal(t, _weights(paths[1])[name])
    # stronger sparsity gives fewer active latents
    l0 = [evaluate_sae(load_sae(p), ActivationSource(small_npy))["l0"] for p in paths]
    assert l0[0] > l0[1] > l0[2]


def test_nan_activations_are_refused_with_a_clear_error(tmp_path, small_npy):
    x = np.load(small_npy)
    x[1500, 3] = np.nan  # beyond the init sample: caught by the per-batch check
    np.save(tmp_path / "bad.npy", x)
    base = SAEConfig(d_in=16, d_sae=32)
    cfg = TrainConfig(batch_size=100, block_rows=1000, **{**QUIET, "init_rows": 500})
    with pytest.raises(ValueError, match="NaN or inf"):
        train(tmp_path / "bad.npy", tmp_path / "out", make_specs(base, [1e-3], [None]), cfg)
    assert not (tmp_path / "out/cfg.json").exists()


def test_divergence_stops_without_writing_a_broken_sae(tmp_path, small_npy):
    x = np.load(small_npy) * 1e30  # squares overflow float32
    np.save(tmp_path / "huge.npy", x)
    cfg = TrainConfig(batch_size=100, b_dec_init="zeros", **QUIET)
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        train(tmp_path / "huge.npy", tmp_path / "out", make_specs(SAEConfig(d_in=16, d_sae=32), [1e-3], [None]), cfg)
    assert not (tmp_path / "out/sae_weights.safetensors").exists()


def test_wrong_shapes_are_refused(tmp_path):
    np.save(tmp_path / "three_d.npy", np.zeros((4, 3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        ActivationSource(tmp_path / "three_d.npy")
    np.save(tmp_path / "ok.npy", np.zeros((10, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="d_in=16"):
        train(tmp_path / "ok.npy", tmp_path / "o", make_specs(SAEConfig(d_in=16, d_sae=8), [1e-3], [None]), TrainConfig())


def test_batches_cover_every_row_once_per_epoch_and_skip_is_exact(small_npy):
    from sae_core.data import iter_batches, make_plan

    src = ActivationSource(small_npy)
    plan = make_plan(src.n_rows, batch_size=96, block_rows=500)
    batches = list(iter_batches(src, plan, seed=3, epoch=1))
    assert len(batches) == plan.batches_per_epoch
    rows = torch.cat(batches).numpy()
    full = np.load(small_npy)
    # the same multiset of rows, in a shuffled order
    assert rows.shape == full.shape and not np.array_equal(rows, full)
    np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(full, axis=0))
    tail = list(iter_batches(src, plan, seed=3, epoch=1, skip=7))
    for a, b in zip(batches[7:], tail, strict=True):
        assert torch.equal(a, b)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_train_metrics_and_errors(tmp_path, small_npy):
    r = run_cli("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("train", "metrics", "convert"))
    r = run_cli("train", "--acts", small_npy, "--out", str(tmp_path / "s"), "--arch", "topk", "--d-sae", "32",
                "--k", "2,4", "--batch-size", "200", "--epochs", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s/k_2/cfg.json").exists() and (tmp_path / "s/k_4/cfg.json").exists()
    assert "step" in (tmp_path / "s/train.log").read_text()
    r = run_cli("metrics", "--acts", small_npy, "--sae", str(tmp_path / "s"), "--out", str(tmp_path / "m.md"))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("| k_")]
    assert len(lines) == 2 and "Avg. L0" in r.stdout
    records = json.loads((tmp_path / "m.json").read_text())
    assert [round(rec["l0"], 6) <= k for rec, k in zip(records, (2, 4))] == [True, True]
    r = run_cli("train", "--acts", small_npy, "--out", str(tmp_path / "t"), "--arch", "topk", "--d-sae", "32")
    assert r.returncode == 2 and "needs --k" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "--acts", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "t"), "--d-sae", "8")
    assert r.returncode == 2 and "no such activation file" in r.stderr
