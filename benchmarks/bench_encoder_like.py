"""Every architecture at default flags against sparsify's TopK *at the same L0*, on data shaped
like real encoder activations (issue 20, point 3).

    nice -n 5 .venv/bin/python benchmarks/bench_encoder_like.py [--seed 0]
    (also: benchmarks/bench_train.py --encoder-like)

Data: `synthetic.encoder_like` (shared mean 4× the rows' norm, Zipf frequencies, per-atom scales,
co-firing pairs, 1% rows at 10×), ENCODER_LIKE's size, with 10,000 held-out rows. Each
architecture is trained by `clipsae train` with only --arch, --d-sae, --epochs (and --k for the
k architectures, --groups for matryoshka); its held-out L0 is then given to sparsify's TopK as
k (rounded), trained on the same rows in the same order at our default batch and sparsify's
Adam lr rule (benchmarks/gpu/sparsify_loop.py). EV overall and on the ordinary (non-outlier)
held-out rows, dead % (never fired on them), mean max cosine with the planted atoms. Δ: ours
minus sparsify at that L0 (the target: ≥ −0.01 on both). Prints Markdown; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sae_core.synthetic import encoder_like  # noqa: E402

ENCODER_LIKE = dict(rows=60_000, d=64, atoms=256, active=6, d_sae=1024, k=8, epochs=2)
"""A reduced encoder_like set that runs in minutes on a CPU."""
ARCHS = ("topk", "batchtopk", "matryoshka", "jumprelu", "relu")


def _ev(x_hat: np.ndarray, x: np.ndarray) -> float:
    e = x_hat.astype(np.float64) - x
    return float(1 - (e**2).sum() / ((x - x.mean(0)) ** 2).sum())


def _mmc(atoms: np.ndarray, w_dec: np.ndarray) -> float:
    w = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
    return float((atoms @ w.T).max(axis=1).mean())


def _scores(x_hat: np.ndarray, fired_bs: np.ndarray, held: np.ndarray, ordinary: np.ndarray) -> dict:
    return {
        "ev": _ev(x_hat, held),
        "ev_ord": _ev(x_hat[ordinary], held[ordinary]),
        "l0": float(fired_bs.sum(1).mean()),
        "dead": 100 * float((~fired_bs.any(0)).mean()),
    }


def train_ours(acts: Path, out: Path, arch: str, s: dict) -> None:
    """`clipsae train` at default flags (only the shape of the run given)."""
    cmd = [sys.executable, "-m", "app.cli", "train", "--acts", str(acts), "--out", str(out), "--arch", arch]
    cmd += ["--d-sae", str(s["d_sae"]), "--epochs", str(s["epochs"]), "--device", "cpu", "--checkpoint-every", "0"]
    if arch in ("topk", "batchtopk", "matryoshka"):
        cmd += ["--k", str(s["k"])]
    if arch == "matryoshka":
        cmd += ["--groups", f"{s['d_sae'] // 8},{s['d_sae'] // 2},{s['d_sae']}"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])


def train_sparsify(acts: Path, out: Path, k: int, batch: int, s: dict) -> None:
    """sparsify's TopK at k, our batch and its lr rule 2e-4/√(d_sae/2¹⁴), Adam, same batches."""
    arg = {"acts": str(acts), "out": str(out), "d_sae": s["d_sae"], "k": k, "batch": batch}
    arg |= {"lr": 2e-4 / (s["d_sae"] / 2**14) ** 0.5, "epochs": s["epochs"], "optimizer": "adam"}
    arg |= {"repo": str(REPO), "device": "cpu"}
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu/sparsify_loop.py"), json.dumps(arg)],
        capture_output=True,
        text=True,
        env={**os.environ, "SPARSIFY_DISABLE_TRITON": "1"},
    )
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])


def encoder_like_table(tmp: Path, seed: int, archs: tuple[str, ...] = ARCHS) -> str:
    """Train each architecture and sparsify at each one's L0; return the Markdown table."""
    import torch

    from sae_core.io import load_sae

    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    from sparsify import SparseCoder

    s = ENCODER_LIKE
    x, atoms, outlier = encoder_like(s["rows"] + 10_000, s["d"], s["atoms"], s["active"], seed=seed)
    held, ordinary = x[s["rows"] :], ~outlier[s["rows"] :]
    acts = tmp / "encoder_like.npy"
    np.save(acts, x[: s["rows"]])
    theirs: dict[int, dict] = {}
    lines = [
        "| arch | normalisation | L0 | EV | EV ordinary | dead % | mmc | sparsify TopK k=L0: EV / ordinary | Δ EV | Δ ordinary |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arch in archs:
        out = tmp / f"el_{arch}"
        train_ours(acts, out, arch, s)
        batch = json.loads((out / "train_config.json").read_text())["train_config"]["batch_size"]
        sae = load_sae(out).eval()
        with torch.no_grad():
            o = sae(torch.from_numpy(held))
        ours = _scores(o.x_hat_bd.numpy(), (o.f_bs > 0).numpy(), held, ordinary)
        k = max(1, round(ours["l0"]))
        if k not in theirs:
            train_sparsify(acts, tmp / f"sp_{k}", k, batch, s)
            sp = SparseCoder.load_from_disk(tmp / f"sp_{k}")
            with torch.no_grad():
                so = sp(torch.from_numpy(held))
            fired = np.zeros((len(held), s["d_sae"]), dtype=bool)
            np.put_along_axis(fired, so.latent_indices.numpy(), True, axis=1)
            theirs[k] = _scores(so.sae_out.numpy(), fired, held, ordinary)
        t = theirs[k]
        lines.append(
            f"| {arch} | {sae.cfg.normalize_activations} | {ours['l0']:.1f} | {ours['ev']:.3f} | {ours['ev_ord']:.3f} | "
            f"{ours['dead']:.1f} | {_mmc(atoms, sae.W_dec.detach().numpy()):.3f} | k={k}: {t['ev']:.3f} / "
            f"{t['ev_ord']:.3f} | {ours['ev'] - t['ev']:+.3f} | {ours['ev_ord'] - t['ev_ord']:+.3f} |"
        )
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="seed of the encoder_like data")
    p.add_argument("--arch", default=",".join(ARCHS), help="comma-separated architectures")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(encoder_like_table(Path(tmp), a.seed, tuple(a.arch.split(","))))


if __name__ == "__main__":
    main()
