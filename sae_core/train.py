"""Train one SAE, or several on the same batches (a λ or k sweep), in one pass over the data.

    clipsae train --acts cache/ --out saes/ --arch relu --d-sae 4096 \
        --l1 1e-3,1e-2,3e-2 --lr 1e-3 --batch-size 256 --epochs 5 --normalize unit_norm
    clipsae train --acts acts.npy --out saes/ --arch topk --d-sae 16384 --k 16,32,64
    clipsae train ... --resume        # continue exactly from saes/checkpoint/

Writes to --out: the SAE folder (one value) or one sub-folder per swept value
(`l1_0.001/`, `k_32/`), `train_config.json`, `train.log` (metric lines) and, while
running, `checkpoint/` (every `checkpoint_every` steps; removed after success,
`train_summary.json` stays).

Not handled here: activation extraction (`precompute`), evaluation beyond the SAE
metrics (`clipsae metrics`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import io
from .config import SAEConfig, TrainConfig
from .errors import TrainingDiverged
from .data import ActivationSource, iter_batches, make_plan, sample_rows
from .metrics import MetricsAccumulator
from .progress import Progress
from .sae import SAEOutput, SparseAutoencoder, auxk_loss, geometric_median

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
SUMMARY_FILE = "train_summary.json"
LOG_FILE = "train.log"


@dataclass(frozen=True)
class RunSpec:
    """One SAE of a sweep: its name (sub-folder), model config and sparsity coefficient."""

    name: str
    cfg: SAEConfig
    l1_coefficient: float

    def to_dict(self) -> dict:
        return {"name": self.name, "cfg": self.cfg.to_dict(), "l1_coefficient": self.l1_coefficient}


def make_specs(base: SAEConfig, l1_values: list[float], k_values: list[int | None]) -> list[RunSpec]:
    """One RunSpec per (λ, k) pair; names only mention the values that vary."""
    specs = []
    for l1 in l1_values:
        for k in k_values:
            cfg = SAEConfig.from_dict({**base.to_dict(), "k": k})
            parts = []
            if len(l1_values) > 1:
                parts.append(f"l1_{l1:g}")
            if len(k_values) > 1:
                parts.append(f"k_{k}")
            specs.append(RunSpec(name="_".join(parts) or "sae", cfg=cfg, l1_coefficient=l1))
    return specs


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for CUDA, but no CUDA device is available; use --device cpu")
    return dev


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant, then linear or cosine decay to 0 over the last fraction."""
    factor = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else 1.0
    start = total * (1 - cfg.lr_decay_fraction)
    if cfg.lr_decay != "none" and cfg.lr_decay_fraction > 0 and step >= start:
        t = (step - start) / max(total - start, 1)
        factor *= (1 - t) if cfg.lr_decay == "linear" else 0.5 * (1 + math.cos(math.pi * t))
    return factor


def l1_factor(step: int, cfg: TrainConfig) -> float:
    return min(1.0, (step + 1) / cfg.l1_warmup_steps) if cfg.l1_warmup_steps else 1.0


class _Run:
    """One SAE being trained: model, optimiser, dead-latent counters and a metrics window."""

    def __init__(self, spec: RunSpec, cfg: TrainConfig, device: torch.device):
        self.spec = spec
        self.sae = SparseAutoencoder(spec.cfg, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=cfg.lr, betas=cfg.adam_betas)
        self.since_fired_s = torch.zeros(spec.cfg.d_sae, dtype=torch.int64, device=device)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.acc = MetricsAccumulator(spec.cfg.d_in, spec.cfg.d_sae)
        self.last_loss = float("nan")
        self.last_metrics: dict[str, float] = {}
        mode = cfg.dead_latents
        if mode == "auto":
            mode = "auxk" if spec.cfg.architecture in ("topk", "batchtopk") else "resample"
        self.dead_mode = mode

    # ---------------------------------------------------------------- checkpoint state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = {f"sae.{k}": v.detach().cpu().contiguous() for k, v in self.sae.state_dict().items()}
        t["since_fired"] = self.since_fired_s.cpu()
        t["gen_state"] = self.gen.get_state()
        for idx, st in self.opt.state_dict()["state"].items():
            for key, v in st.items():
                t[f"opt.{idx}.{key}"] = torch.as_tensor(v).detach().cpu().contiguous()
        return t

    def load_state_tensors(self, t: dict[str, torch.Tensor]) -> None:
        device = self.since_fired_s.device
        self.sae.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("sae.")})
        self.since_fired_s = t["since_fired"].to(device)
        self.gen.set_state(t["gen_state"])
        opt_state = self.opt.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v if key == "step" else v.to(device)
        opt_state["state"] = state
        self.opt.load_state_dict(opt_state)

    # ---------------------------------------------------------------- one step
    def step(self, x_bd: torch.Tensor, step: int, total: int, cfg: TrainConfig, dead_after: int) -> None:
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, total, cfg)
        out: SAEOutput = self.sae(x_bd)
        loss = out.mse + self.spec.l1_coefficient * l1_factor(step, cfg) * out.sparsity
        dead_s = self.since_fired_s >= dead_after
        if self.dead_mode == "auxk":
            loss = loss + cfg.aux_coefficient * auxk_loss(self.sae, out, dead_s, cfg.aux_k)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"SAE {self.spec.name!r}: the loss became {float(loss.detach())} at step {step}; nothing was saved "
                f"for it. Try a lower --lr (now {cfg.lr:g}) or check the activations."
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.sae.remove_parallel_grads_()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), cfg.grad_clip)
        self.opt.step()
        self.sae.normalize_decoder_()
        self.sae.clamp_threshold_()
        if self.spec.cfg.architecture == "batchtopk":
            kept = out.coords[2] if out.coords is not None else out.f_bs
            self.sae.update_batchtopk_threshold_(kept.detach(), cfg.batchtopk_threshold_momentum)
        abs_sum, fire_count_s = out.latent_stats()
        self.sae.note_density(float(fire_count_s.sum()) / out.h_bs.numel())
        self.since_fired_s += x_bd.shape[0]
        self.since_fired_s[fire_count_s > 0] = 0
        self.acc.update_stats(out.x_norm_bd, out.x_hat_norm_bd, abs_sum, fire_count_s)
        self.last_loss = float(loss.detach())
        if self.dead_mode == "resample" and (step + 1) % cfg.resample_every == 0:
            self.resample_dead_(out, dead_after)

    @torch.no_grad()
    def resample_dead_(self, out: SAEOutput, dead_after: int) -> None:
        """Point dead latents at poorly reconstructed inputs of the last batch (Anthropic 2023)."""
        dead_s = self.since_fired_s >= dead_after
        n_dead = int(dead_s.sum())
        if n_dead == 0:
            return
        sae = self.sae
        residual_bd = out.x_norm_bd - out.x_hat_norm_bd.detach()
        weights = residual_bd.pow(2).sum(dim=1).pow(2).cpu().double()
        if not float(weights.sum()) > 0:
            return
        idx = torch.multinomial(weights, n_dead, replacement=True, generator=self.gen).to(residual_bd.device)
        dirs = residual_bd[idx]
        dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-8)
        alive = ~dead_s
        enc_norm = float(sae.W_enc[:, alive].norm(dim=0).mean()) if bool(alive.any()) else 1.0
        sae.W_dec[dead_s] = dirs
        sae.W_enc[:, dead_s] = dirs.T * (0.2 * enc_norm)
        sae.b_enc[dead_s] = 0.0
        for p, sel in ((sae.W_dec, (dead_s, slice(None))), (sae.W_enc, (slice(None), dead_s)), (sae.b_enc, (dead_s,))):
            st = self.opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key][sel] = 0.0
        self.since_fired_s[dead_s] = 0
        log.info("%s: resampled %d dead latents", self.spec.name, n_dead)


def init_runs(runs: list[_Run], sample_nd: torch.Tensor, cfg: TrainConfig) -> None:
    """Fit, on a sample of the data: the normalisation constant, the decoder bias, and the
    encoder scale.

    The encoder starts as the decoder's transpose. ReLU and top-k selection commute with a
    positive scale α of the encoder, so the α minimising ‖x_c − α·dec(f)‖² has the closed form
    α = ⟨x_c, g⟩ / ⟨g, g⟩ with g = f @ W_dec: the first steps start from the best
    reconstruction of that family instead of overshooting.
    """
    if not torch.isfinite(sample_nd).all():
        raise ValueError("the activations contain NaN or inf values; re-run the extraction")
    for run in runs:
        sae = run.sae
        device = sae.W_enc.device
        if sae.cfg.normalize_activations == "expected_average_only_in":
            factor = math.sqrt(sae.cfg.d_in) / float(sample_nd.norm(dim=1).mean())
            sae.cfg = SAEConfig.from_dict({**sae.cfg.to_dict(), "norm_scaling_factor": factor})
        x_norm, _ = sae.normalize(sample_nd.to(device))
        if cfg.b_dec_init == "geometric_median":
            b = geometric_median(x_norm)
        elif cfg.b_dec_init == "mean":
            b = x_norm.mean(dim=0)
        else:
            b = torch.zeros(sae.cfg.d_in, device=device)
        with torch.no_grad():
            sae.b_dec.copy_(b)
            if sae.cfg.architecture != "jumprelu":  # its threshold breaks the scale invariance
                x_c = x_norm - sae.b_dec
                g = sae.activate(x_c @ sae.W_enc + sae.b_enc) @ sae.W_dec
                denom = float(g.pow(2).sum())
                if denom > 0:
                    alpha = float((x_c * g).sum()) / denom
                    if alpha > 0:
                        sae.W_enc.mul_(alpha)


def _save_checkpoint(out: Path, runs: list[_Run], step: int, meta: dict) -> None:
    def fill(tmp: Path) -> None:
        for i, run in enumerate(runs):
            save_file(run.state_tensors(), str(tmp / f"run_{i}.safetensors"))
        # norm_scaling_factor is fitted at init, so the configs are saved as they are now.
        state = {**meta, "step": step, "specs_now": [r.sae.cfg.to_dict() for r in runs]}
        (tmp / "state.json").write_text(json.dumps(state, indent=2))

    io.atomic_write_dir(out / CHECKPOINT_DIR, fill)


def _attach_log_file(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("sae_core").addHandler(handler)
    logging.getLogger("sae_core").setLevel(logging.INFO)
    return handler


def sae_dir(out: Path, specs: list[RunSpec], spec: RunSpec) -> Path:
    return out if len(specs) == 1 else out / spec.name


def train(
    acts: str | Path,
    out: str | Path,
    specs: list[RunSpec],
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    metadata: dict | None = None,
) -> list[Path]:
    """Train every spec on the same batches; return the SAE folders written."""
    out = Path(out)
    source = ActivationSource(acts)
    for spec in specs:
        if spec.cfg.d_in != source.d:
            raise ValueError(f"SAE d_in={spec.cfg.d_in} but the activations in {acts} have width {source.d}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep values give duplicate names: {names}")
    # JSON round trip: the comparison with a saved checkpoint sees lists, not tuples.
    meta = json.loads(json.dumps({
        "train_config": cfg.to_dict(),
        "specs": [s.to_dict() for s in specs],
        "acts": str(acts),
        "n_rows": source.n_rows,
    }))
    ckpt = out / CHECKPOINT_DIR
    if out.exists() and not resume and not overwrite and (ckpt.exists() or any(out.glob("**/" + io.CFG_FILE))):
        raise FileExistsError(f"{out} already holds an SAE or a checkpoint; pass --resume to continue it or --overwrite")
    if resume and (out / SUMMARY_FILE).exists() and not ckpt.exists():
        done = json.loads((out / SUMMARY_FILE).read_text())
        if done.get("train_config") == meta["train_config"] and done.get("specs") == meta["specs"]:
            log.info("%s: training already finished; nothing to resume", out)
            return [sae_dir(out, specs, s) for s in specs]
    out.mkdir(parents=True, exist_ok=True)
    handler = _attach_log_file(out)
    try:
        return _train(source, out, specs, cfg, resume, meta, metadata or source.metadata)
    finally:
        logging.getLogger("sae_core").removeHandler(handler)
        handler.close()


def _train(source: ActivationSource, out: Path, specs: list[RunSpec], cfg: TrainConfig, resume: bool,
           meta: dict, src_meta: dict) -> list[Path]:
    device = resolve_device(cfg.device)
    plan = make_plan(source.n_rows, cfg.batch_size, cfg.block_rows)
    per_epoch = plan.batches_per_epoch
    total = per_epoch * cfg.epochs
    dead_after = min(cfg.dead_after_samples, source.n_rows)
    runs = [_Run(spec, cfg, device) for spec in specs]
    step = 0
    ckpt = out / CHECKPOINT_DIR
    if resume and (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        for key in ("train_config", "specs", "n_rows"):
            if state[key] != meta[key]:
                raise ValueError(
                    f"{ckpt} was written with a different {key}: {_diff(state[key], meta[key])}. "
                    "Resume with the original command, or start over in another --out."
                )
        for i, run in enumerate(runs):
            run.sae.cfg = SAEConfig.from_dict(state["specs_now"][i])
            run.load_state_tensors(load_file(str(ckpt / f"run_{i}.safetensors")))
        step = int(state["step"])
        log.info("resumed from %s at step %d/%d", ckpt, step, total)
    else:
        try:
            init_runs(runs, torch.from_numpy(sample_rows(source, cfg.init_rows, cfg.seed)), cfg)
        except ValueError as exc:
            raise ValueError(f"{source.path}: {exc}") from None
    io.atomic_write_text(out / "train_config.json", json.dumps(meta, indent=2))
    log.info("training %d SAE(s) on %d rows x %d, %d steps (%d per epoch) on %s",
             len(runs), source.n_rows, source.d, total, per_epoch, device)
    bar = Progress(total, "train", unit="step", logger=log, initial=step)
    for run in runs:
        run.sae.train()
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        for x in iter_batches(source, plan, cfg.seed, epoch, skip=skip, device=device):
            if not torch.isfinite(x).all():
                raise ValueError(
                    f"{source.path}: batch {step} (epoch {epoch}) contains NaN or inf activations; "
                    "clean or re-extract the activations"
                )
            for run in runs:
                run.step(x, step, total, cfg, dead_after)
            step += 1
            bar.update()
            if step % cfg.log_every == 0 or step == total:
                _log_metrics(runs, step, total, bar)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total:
                _save_checkpoint(out, runs, step, meta)
            if step >= total:
                break
    bar.close()
    written = []
    summary = {**meta, "steps": total, "final_metrics": {}}
    for run in runs:
        run.sae.eval()
        dest = sae_dir(out, specs, run.spec)
        cfg_meta = {**_cfg_metadata(src_meta), **run.sae.cfg.metadata,
                    "l1_coefficient": run.spec.l1_coefficient, "trained_rows": source.n_rows, "steps": total}
        run.sae.cfg = SAEConfig.from_dict({**run.sae.cfg.to_dict(), "metadata": cfg_meta})
        for name, t in io.sae_state_tensors(run.sae).items():
            if not torch.isfinite(t).all():
                raise TrainingDiverged(f"SAE {run.spec.name!r}: {name} contains NaN/inf after training; not saved")
        io.save_sae(run.sae, dest)
        summary["final_metrics"][run.spec.name] = run.last_metrics
        written.append(dest)
    io.atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written


def _diff(old: object, new: object) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
    return f"{old!r} -> {new!r}"


def _cfg_metadata(src_meta: dict) -> dict:
    """Carry the activation cache's provenance (model, weights, hook, tokens) into cfg.json."""
    keys = ("model_name", "model_config_path", "pretrained", "random_weights", "seed", "weights_sha256",
            "hook_name", "tokens", "image_size")
    return {k: src_meta[k] for k in keys if k in src_meta}


def _log_metrics(runs: list[_Run], step: int, total: int, bar: Progress) -> None:
    for run in runs:
        if not run.acc.n:
            continue
        m = run.last_metrics = run.acc.result()
        log.info(
            "step %d/%d %s loss=%.4g mse=%.4g l0=%.1f ev=%.4f cos=%.4f alive=%.1f%% lr=%.3g",
            step, total, run.spec.name, run.last_loss, m["mse"], m["l0"], m["explained_variance"],
            m["cosine_similarity"], 100 * m["alive_fraction"], run.opt.param_groups[0]["lr"],
        )
        run.acc.reset()
    first = runs[0]
    bar.set_postfix(loss=f"{first.last_loss:.3g}")
