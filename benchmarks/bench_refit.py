"""ReLU (or JumpReLU) with `--l1 sweep` on planted data, before and after the support-frozen refit.

    nice -n 5 .venv/bin/python benchmarks/bench_refit.py                  # issue 20's planted set
    nice -n 5 .venv/bin/python benchmarks/bench_refit.py --arch jumprelu --rows 20000

Issue 20's planted set by default: 100,000 training rows, d=96, 512 unit atoms, 6 active per
row, noise 0.02 (seed 2020, not used elsewhere), 1,024 latents, 5 epochs, every other flag at
its default. Prints, per λ of the sweep, L0, explained variance (on 20,000 held-out rows of the
same dictionary) and the mean-max-cosine of the atoms with the decoder rows, before and after
the refit in its two modes (scale: per-latent scales and b_dec, the default; decoder: the
decoder rows too; the scale mode keeps the decoder directions, so its mmc is the one before).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_core.config import SAEConfig, SweepConfig, TrainConfig  # noqa: E402
from sae_core.data import ActivationSource  # noqa: E402
from sae_core.evaluate import evaluate_sae  # noqa: E402
from sae_core.io import load_sae  # noqa: E402
from sae_core.sweep import make_specs  # noqa: E402
from sae_core.synthetic import planted_dictionary  # noqa: E402
from sae_core.data import sample_rows  # noqa: E402
from sae_core.refit import refit_  # noqa: E402
from sae_core.train import train  # noqa: E402


def score(sae, heldout: Path, atoms: np.ndarray) -> dict[str, float]:
    """L0 and EV on the held-out rows, mean-max-cosine of the atoms with the decoder rows."""
    m = evaluate_sae(sae, ActivationSource(heldout))
    w = sae.W_dec.detach().numpy()
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return {"l0": m["l0"], "ev": m["explained_variance"], "mmc": float((atoms @ w.T).max(axis=1).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="relu", choices=["relu", "jumprelu"])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--d", type=int, default=96)
    p.add_argument("--atoms", type=int, default=512)
    p.add_argument("--active", type=int, default=6)
    p.add_argument("--noise", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--l1", default="sweep", help="comma list of λ, or sweep")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    x, atoms = planted_dictionary(a.rows + 20_000, a.d, a.atoms, a.active, a.noise, a.seed)
    l1 = ("sweep",) if a.l1 == "sweep" else tuple(float(v) for v in a.l1.split(","))
    _, l1_values = SweepConfig(acts="", out="", l1=l1).values(a.arch)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "train.npy", x[: a.rows])
        np.save(tmp / "heldout.npy", x[a.rows :])
        base = SAEConfig(d_in=a.d, d_sae=a.d_sae, architecture=a.arch)
        cfg = TrainConfig(epochs=a.epochs, checkpoint_every=0, device=a.device, refit="none")
        paths = train(tmp / "train.npy", tmp / "out", make_specs(base, l1_values, [None]), cfg)
        refit_x = torch.from_numpy(sample_rows(ActivationSource(tmp / "train.npy"), cfg.refit_rows, cfg.seed + 2))
        print(
            f"{a.arch}, {a.rows} rows, d={a.d}, {a.atoms} atoms, {a.active} active, noise {a.noise}, "
            f"seed {a.seed}, {a.d_sae} latents, {a.epochs} epochs; EV on 20,000 held-out rows"
        )
        print(
            "| λ | L0 | EV before | EV scale | EV decoder | mmc before | mmc decoder |\n|---|---|---|---|---|---|---|"
        )
        for lam, path in zip(l1_values, paths):
            sae = load_sae(path)
            before = score(sae, tmp / "heldout.npy", atoms)
            after = {}
            for mode in ("scale", "decoder"):
                refitted = copy.deepcopy(sae)
                refit_(refitted, refit_x, mode=mode)
                after[mode] = score(refitted, tmp / "heldout.npy", atoms)
            assert abs(after["scale"]["l0"] - before["l0"]) < 1e-3 * max(before["l0"], 1)
            print(
                f"| {lam:g} | {before['l0']:.1f} | {before['ev']:.4f} | {after['scale']['ev']:.4f} | "
                f"{after['decoder']['ev']:.4f} | {before['mmc']:.3f} | {after['decoder']['mmc']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
