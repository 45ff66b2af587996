"""Configuration dataclasses: the SAE model (`SAEConfig`) and a training run (`TrainConfig`).

The model config is what is saved in `cfg.json` beside the weights; the run config is
saved as `train_config.json` in the output folder. Both validate themselves in
`__post_init__` and raise `ValueError` naming the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu"]
Normalize = Literal["none", "unit_norm", "layer_norm", "expected_average_only_in"]
LayerNormVariant = Literal["saelens", "clipsae-v1"]
BiasInit = Literal["geometric_median", "mean", "zeros"]
DeadLatents = Literal["auto", "auxk", "resample", "none"]
LRDecay = Literal["linear", "cosine", "none"]

ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
NORMALIZATIONS: tuple[str, ...] = get_args(Normalize)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass(frozen=True)
class SAEConfig:
    """Shape and behaviour of one sparse autoencoder (saved as `cfg.json`)."""

    d_in: int
    """Width of the activations the SAE reads (512 for ViT-B/32 `embed`, 1280 for the Kandinsky prior)."""
    d_sae: int
    """Number of latents (dictionary size)."""
    architecture: Architecture = "relu"
    """relu: ReLU + L1 penalty; topk: keep the k largest per input; batchtopk: keep the k·B
    largest over a batch while training, a fixed threshold at inference; jumprelu: a learned
    per-latent threshold trained with a straight-through estimator and an L0 penalty."""
    k: int | None = None
    """Active latents per input for topk/batchtopk (None for the others)."""
    normalize_activations: Normalize = "none"
    """Input normalisation, undone on the output: none; unit_norm (divide by ‖x‖, the
    convention of CLIP similarity); layer_norm (per input: subtract mean, divide by std, as
    ViT-Prisma); expected_average_only_in (one constant so that E‖x‖ = √d_in, SAELens)."""
    norm_scaling_factor: float | None = None
    """The constant for expected_average_only_in, fitted on the training data."""
    layer_norm_variant: LayerNormVariant = "saelens"
    """The layer_norm formula. saelens (SAELens and ViT-Prisma): (x − μ)/(σ + 1e-5) with the
    unbiased σ, output y·σ + μ. clipsae-v1 (SAE folders of format version 1): the biased σ
    + 1e-6, output y·(σ + 1e-6) + μ."""
    jumprelu_bandwidth: float = 0.001
    """Width ε of the rectangle kernel of JumpReLU's straight-through estimator."""
    dtype: str = "float32"
    """Dtype the weights are stored in."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Where the activations came from: model_name, pretrained, hook_name, tokens, …"""

    def __post_init__(self) -> None:
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        _check_choice("normalize_activations", self.normalize_activations, NORMALIZATIONS)
        _check_choice("layer_norm_variant", self.layer_norm_variant, get_args(LayerNormVariant))
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive; got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.architecture in ("topk", "batchtopk"):
            if self.k is None or not 0 < self.k <= self.d_sae:
                raise ValueError(f"architecture {self.architecture} needs 0 < k <= d_sae={self.d_sae}; got k={self.k}")
        elif self.k is not None:
            raise ValueError(f"k is only used by topk/batchtopk, not {self.architecture}; leave it unset")
        if self.jumprelu_bandwidth <= 0:
            raise ValueError(f"jumprelu_bandwidth must be > 0; got {self.jumprelu_bandwidth}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SAEConfig":
        """Build from a `cfg.json` dict, ignoring keys other tools add (SAELens writes many)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in d.items() if key in names})


@dataclass(frozen=True)
class TrainConfig:
    """One training run: optimisation, schedules, dead latents, checkpoints (saved as `train_config.json`)."""

    # --- data ---
    batch_size: int = 4096
    """Inputs per optimisation step (the seeds use 256 for 4096 latents on Flickr30k)."""
    epochs: int = 1
    """Passes over the activation matrix."""
    block_rows: int = 262_144
    """Rows read sequentially from disk at once; batches are shuffled within a block."""
    seed: int = 0
    """Seeds the weight init, the block order and the within-block shuffles."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""

    # --- optimisation ---
    lr: float = 4e-4
    """Adam learning rate after warm-up."""
    lr_warmup_steps: int = 100
    """Linear warm-up from 0 to lr."""
    lr_decay: LRDecay = "linear"
    """Decay to 0 over the last `lr_decay_fraction` of the steps (none: constant)."""
    lr_decay_fraction: float = 0.2
    """Fraction of training over which the learning rate decays."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's (β1, β2)."""
    grad_clip: float = 1.0
    """Maximum global gradient norm per SAE (0 disables)."""
    l1_warmup_steps: int = 0
    """Linear warm-up of λ from 0 (0: no warm-up)."""

    # --- initialisation ---
    b_dec_init: BiasInit = "geometric_median"
    """Decoder bias init from the first block: geometric median (PatchSAE, seed 004), mean, or zeros."""
    init_rows: int = 16_384
    """Rows of the first block used for the bias init and the normalisation constant."""

    # --- dead latents ---
    dead_latents: DeadLatents = "auto"
    """auto: AuxK for topk/batchtopk, resampling for relu/jumprelu; or force one, or none."""
    dead_after_samples: int = 1_000_000
    """A latent that has not fired for this many inputs counts as dead (capped at one epoch)."""
    aux_k: int = 512
    """Dead latents used by the AuxK loss."""
    aux_coefficient: float = 1 / 32
    """Weight α of the AuxK loss."""
    resample_every: int = 2_500
    """Steps between dead-latent resamplings (relu/jumprelu)."""

    # --- bookkeeping ---
    log_every: int = 50
    """Steps between metric lines in train.log."""
    checkpoint_every: int = 1_000
    """Steps between checkpoints (0 disables)."""
    batchtopk_threshold_momentum: float = 0.99
    """EMA momentum of batchtopk's inference threshold."""

    def __post_init__(self) -> None:
        _check_choice("lr_decay", self.lr_decay, get_args(LRDecay))
        _check_choice("b_dec_init", self.b_dec_init, get_args(BiasInit))
        _check_choice("dead_latents", self.dead_latents, get_args(DeadLatents))
        positive = {
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "block_rows": self.block_rows,
            "lr": self.lr,
            "init_rows": self.init_rows,
            "aux_k": self.aux_k,
            "resample_every": self.resample_every,
            "log_every": self.log_every,
            "dead_after_samples": self.dead_after_samples,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0; got {value}")
        for name in ("lr_warmup_steps", "l1_warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise ValueError(f"lr_decay_fraction must be in [0, 1]; got {self.lr_decay_fraction}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0; got {self.grad_clip}")
        if not 0 <= self.batchtopk_threshold_momentum < 1:
            raise ValueError("batchtopk_threshold_momentum must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(**d)
