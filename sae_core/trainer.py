"""One SAE under training: its optimiser step, dead-latent handling (AuxK or resampling)
and the state a checkpoint needs to resume bit-exactly."""

from __future__ import annotations

import logging

import torch

from . import rules
from .adam import FusedAdam, clip_grad_norm_
from .config import K_ARCHS, TrainConfig
from .errors import TrainingDiverged
from .losses import auxk_loss
from .metrics import MetricsAccumulator
from .sae import SAEOutput, SparseAutoencoder
from .schedule import l1_factor, lr_factor
from .sweep import RunSpec

log = logging.getLogger(__name__)


class SAETrainer:
    """One SAE being trained: model, optimiser, dead-latent counters and a metrics window."""

    def __init__(self, spec: RunSpec, cfg: TrainConfig, device: torch.device):
        self.spec = spec
        seed = cfg.seed if spec.seed is None else spec.seed
        self.sae = SparseAutoencoder(spec.cfg, generator=torch.Generator().manual_seed(seed)).to(device)
        self.opt = FusedAdam(self.sae.parameters(), lr=cfg.lr, betas=cfg.adam_betas)
        self.since_fired_s = torch.zeros(spec.cfg.d_sae, dtype=torch.int64, device=device)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.acc = MetricsAccumulator(spec.cfg.d_in, spec.cfg.d_sae)
        self._last_loss = torch.full((), float("nan"), device=device)
        self.eager_checks = device.type != "cuda"
        """Check the loss for NaN/inf at every step (free on a CPU). On CUDA the first bad step
        is kept on the device and `check_finite` reads it when metrics are logged, before a
        checkpoint and before saving: no host-device sync per step."""
        self._bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self._bad_loss = torch.zeros((), device=device)
        self.last_metrics: dict[str, float] = {}
        self.l1_scale = torch.ones((), dtype=torch.float64)
        """λ's factor for the loss convention (`losses.sparsity_scale`), fixed at init; checkpointed."""
        mode = cfg.dead_latents
        if mode == "auto":
            mode = "auxk" if spec.cfg.architecture in K_ARCHS else "resample"
        self.dead_mode = mode

    # ---------------------------------------------------------------- checkpoint state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = {f"sae.{k}": v.detach().cpu().contiguous() for k, v in self.sae.state_dict().items()}
        t["since_fired"] = self.since_fired_s.cpu()
        t["gen_state"] = self.gen.get_state()
        t["l1_scale"] = self.l1_scale.clone()
        t.update(self.opt.state_tensors())
        return t

    def load_state_tensors(self, t: dict[str, torch.Tensor]) -> None:
        device = self.since_fired_s.device
        self.sae.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("sae.")})
        self.since_fired_s = t["since_fired"].to(device)
        self.gen.set_state(t["gen_state"])
        self.l1_scale = t["l1_scale"].clone()
        self.opt.load_state_tensors(t)

    # ---------------------------------------------------------------- one step
    def step(self, x_bd: torch.Tensor, step: int, total: int, cfg: TrainConfig, dead_after: int) -> None:
        self.opt.lr = cfg.lr * lr_factor(step, total, cfg)
        out: SAEOutput = self.sae(x_bd)
        loss = out.recon_loss
        if self.spec.l1_coefficient:
            loss = loss + (self.spec.l1_coefficient * float(self.l1_scale) * l1_factor(step, cfg)) * out.sparsity
        dead_s = self.since_fired_s >= dead_after
        if self.dead_mode == "auxk":
            loss = loss + cfg.aux_coefficient * auxk_loss(self.sae, out, dead_s, cfg.aux_k)
        if self.eager_checks:
            if not torch.isfinite(loss):
                raise self._diverged(float(loss.detach()), step, cfg)
        else:
            bad = ~torch.isfinite(loss.detach()) & (self._bad_step < 0)
            self._bad_step = torch.where(bad, step, self._bad_step)
            self._bad_loss = torch.where(bad, loss.detach().float(), self._bad_loss)
        self.opt.zero_grad()
        loss.backward()
        self.sae.remove_parallel_grads_()
        if cfg.grad_clip > 0:
            clip_grad_norm_(self.opt.params, cfg.grad_clip)
        self.opt.step()
        self.sae.normalize_decoder_()
        self.sae.clamp_threshold_()
        if self.spec.cfg.architecture in rules.BATCH_ARCHS:
            kept = out.coords[2] if out.coords is not None else out.f_bs
            self.sae.update_batchtopk_threshold_(kept.detach(), cfg.batchtopk_threshold_momentum)
        abs_sum, fire_count_s = out.latent_stats()  # tensors on the device, like everything below
        self.sae.note_density(fire_count_s.sum().double() / out.h_bs.numel())
        self.since_fired_s += x_bd.shape[0]
        self.since_fired_s.masked_fill_(fire_count_s > 0, 0)
        self.acc.update_stats(out.x_norm_bd, out.x_hat_norm_bd, abs_sum, fire_count_s)
        self._last_loss = loss.detach()
        if (
            self.dead_mode == "resample"
            and (step + 1) % cfg.resample_every == 0
            and step + 1 <= cfg.resample_until * total
        ):
            self.resample_dead_(out, dead_after)

    @property
    def last_loss(self) -> float:
        """The last step's loss (read when logged: a sync, once per log line)."""
        return float(self._last_loss)

    def _diverged(self, loss: float, step: int, cfg: TrainConfig) -> TrainingDiverged:
        return TrainingDiverged(
            f"SAE {self.spec.name!r}: the loss became {loss} at step {step}; nothing was saved "
            f"for it. Try a lower --lr (now {cfg.lr:g}) or check the activations."
        )

    def check_finite(self, cfg: TrainConfig) -> None:
        """Raise TrainingDiverged if a step since the start had a NaN/inf loss (CUDA's deferred check)."""
        if not self.eager_checks and int(self._bad_step) >= 0:
            raise self._diverged(float(self._bad_loss), int(self._bad_step), cfg)

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
        params = [(sae.W_dec, (dead_s, slice(None))), (sae.W_enc, (slice(None), dead_s)), (sae.b_enc, (dead_s,))]
        if sae.cfg.architecture == "jumprelu":  # a threshold grown while the latent was dead would keep it dead
            sae.threshold[dead_s] = sae.JUMPRELU_INIT_THRESHOLD
            params.append((sae.threshold, (dead_s,)))
        index = {id(q): i for i, q in enumerate(self.opt.params)}
        for p, sel in params:
            self.opt.exp_avg[index[id(p)]][sel] = 0.0
            self.opt.exp_avg_sq[index[id(p)]][sel] = 0.0
        self.since_fired_s[dead_s] = 0
        log.info("%s: resampled %d dead latents", self.spec.name, n_dead)
