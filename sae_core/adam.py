"""Adam for SAE training: torch's fused Adam kernel, called without `torch.optim`.

`torch.optim.Adam(fused=True)` runs `torch._fused_adam_` (one pass over each tensor, where
the per-op Adam makes several), but the first use of `torch.optim` (and of
`torch.nn.utils.clip_grad_norm_`) imports `torch._dynamo`, seconds of every `clipsae train`
command (benchmarks/bench_train.py). This class keeps the kernel and leaves `torch.optim` out; its steps
equal torch.optim.Adam(fused=True)'s bit for bit (tests/test_train.py), with the state
(step, exp_avg, exp_avg_sq) in the same layout.

Not handled here: weight decay, AMSGrad, complex parameters (SAE training uses none).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class FusedAdam:
    """Adam over a fixed list of parameters; `lr` may change between steps (schedules)."""

    def __init__(
        self, params: Iterable[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        steps = [self.steps[i] for i in live]
        for s in steps:
            s.add_(1)
        torch._fused_adam_(
            [self.params[i] for i in live],
            [self.params[i].grad for i in live],
            [self.exp_avg[i] for i in live],
            [self.exp_avg_sq[i] for i in live],
            [],
            steps,
            amsgrad=False,
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            weight_decay=0.0,
            eps=self.eps,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )

    def state_tensors(self) -> dict[str, Tensor]:
        """`opt.{i}.step|exp_avg|exp_avg_sq` for parameter i (torch.optim's state_dict names)."""
        t: dict[str, Tensor] = {}
        for i in range(len(self.params)):
            t[f"opt.{i}.step"] = self.steps[i].detach().cpu().clone()
            t[f"opt.{i}.exp_avg"] = self.exp_avg[i].detach().cpu().contiguous()
            t[f"opt.{i}.exp_avg_sq"] = self.exp_avg_sq[i].detach().cpu().contiguous()
        return t

    def load_state_tensors(self, t: dict[str, Tensor]) -> None:
        """Restore what `state_tensors` saved, each in its parameter's memory layout."""
        for i in range(len(self.params)):
            self.steps[i].copy_(t[f"opt.{i}.step"])
            self.exp_avg[i].copy_(t[f"opt.{i}.exp_avg"])
            self.exp_avg_sq[i].copy_(t[f"opt.{i}.exp_avg_sq"])


@torch.no_grad()
def clip_grad_norm_(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale the gradients so that their global L2 norm is at most max_norm; returns the norm
    before clipping (`torch.nn.utils.clip_grad_norm_`'s rule: × min(1, max_norm / (norm + 1e-6)))."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef)
    return total
