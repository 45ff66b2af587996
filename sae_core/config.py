"""Configuration dataclasses: the SAE model (`SAEConfig`), a training run (`TrainConfig`), and
what `clipsae train` sweeps (`SweepConfig`) and `clipsae metrics` reads (`MetricsConfig`).

The model config is what is saved in `cfg.json` beside the weights; the run config is
saved as `train_config.json` in the output folder. All validate themselves in
`__post_init__` and raise `ValueError` naming the field and the allowed values. Their
fields are the commands' flags (`cliargs`); this module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .cliargs import COMMAS, COMMAS_OR_SWEEP

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu", "matryoshka"]
Normalize = Literal["none", "unit_norm", "layer_norm", "expected_average_only_in", "centred_unit_norm"]
LayerNormVariant = Literal["saelens", "clipsae-v1"]
BiasInit = Literal["geometric_median", "mean", "zeros"]
DeadLatents = Literal["auto", "auxk", "resample", "none"]
LRDecay = Literal["linear", "cosine", "none"]
L1Convention = Literal["scaled", "mean"]
Refit = Literal["scale", "decoder", "none"]

ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
NORMALIZATIONS: tuple[str, ...] = get_args(Normalize)
K_ARCHS = frozenset({"topk", "batchtopk", "matryoshka"})
"""Architectures whose sparsity is set by k (active latents per input) rather than λ."""


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
    per-latent threshold trained with a straight-through estimator and an L0 penalty;
    matryoshka: batchtopk whose nested prefixes of latents (`groups`) each reconstruct."""
    k: int | None = None
    """Active latents per input for topk/batchtopk/matryoshka (None for the others)."""
    groups: tuple[int, ...] | None = None
    """matryoshka: sizes of the nested prefixes of latents, increasing, the last = d_sae (the
    first g1 latents reconstruct on their own, then the first g2, ...); None for the others."""
    normalize_activations: Normalize = "none"
    """Input normalisation, undone on the output: none; unit_norm (divide by ‖x‖, the
    convention of CLIP similarity); layer_norm (per input: subtract mean, divide by std, as
    ViT-Prisma); expected_average_only_in (one constant so that E‖x‖ = √d_in, SAELens);
    centred_unit_norm ((x − c)/‖x − c‖ with c = `norm_centre`, the training data's mean: every
    input at the same scale around the data's centre, whatever the shared mean offset or the
    input's norm; `clipsae train`'s default, see `TRAIN_NORMALIZE`)."""
    norm_scaling_factor: float | None = None
    """The constant for expected_average_only_in, fitted on the training data."""
    norm_centre: tuple[float, ...] | None = None
    """The centre c [d_in] for centred_unit_norm, fitted on the training data (the sample mean)."""
    layer_norm_variant: LayerNormVariant = "saelens"
    """The layer_norm formula. saelens (SAELens and ViT-Prisma): (x − μ)/(σ + 1e-5) with the
    unbiased σ, output y·σ + μ. clipsae-v1 (SAE folders of format version 1): the biased σ
    + 1e-6, output y·(σ + 1e-6) + μ."""
    jumprelu_bandwidth: float = 0.05
    """Width ε of the rectangle kernel of JumpReLU's straight-through estimator (SAELens' default)."""
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
        if self.architecture in K_ARCHS:
            if self.k is None or not 0 < self.k <= self.d_sae:
                raise ValueError(f"architecture {self.architecture} needs 0 < k <= d_sae={self.d_sae}; got k={self.k}")
        elif self.k is not None:
            raise ValueError(
                f"k is only used by topk, batchtopk and matryoshka, not {self.architecture}; leave it unset"
            )
        if self.groups is not None:
            object.__setattr__(self, "groups", tuple(int(g) for g in self.groups))  # a JSON list comes back a tuple
        if self.norm_centre is not None:
            object.__setattr__(self, "norm_centre", tuple(float(v) for v in self.norm_centre))
            if len(self.norm_centre) != self.d_in:
                raise ValueError(f"norm_centre has {len(self.norm_centre)} values; d_in={self.d_in}")
        if self.architecture == "matryoshka":
            g = self.groups
            if not g or any(b <= a for a, b in zip(g, g[1:])) or g[0] <= 0 or g[-1] != self.d_sae:
                raise ValueError(
                    f"matryoshka needs groups: increasing prefix sizes ending at d_sae={self.d_sae} "
                    f"(for example --groups {max(1, self.d_sae // 16)},{max(2, self.d_sae // 4)},{self.d_sae}); "
                    f"got {list(g) if g else g}"
                )
        elif self.groups is not None:
            raise ValueError(f"groups are only used by matryoshka, not {self.architecture}; leave them unset")
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
    batch_size: int | None = None
    """Inputs per optimisation step. Unset: chosen from the data size and d_sae (see
    `schedule.resolve`): a power of two up to 4096 giving about 2,000 steps; the seeds use 256."""
    epochs: int = 1
    """Passes over the activation matrix."""
    block_rows: int = 262_144
    """Rows held in memory and shuffled together (bounds memory: block_rows × d × 4 bytes)."""
    chunk_rows: int = 1_024
    """Rows read contiguously from disk. Each epoch shuffles the order of the chunks over the
    whole file, so a block gathers block_rows / chunk_rows chunks from anywhere in it."""
    seed: int = 0
    """Seeds the weight init and the resampling draws, and (unless data_seed is set) the chunk
    order, the within-block shuffles and the init sample."""
    data_seed: int | None = None
    """Seeds the chunk order, the within-block shuffles and the init sample. Unset: --seed (the
    first one in a seed sweep, whose SAEs share the batches)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""

    # --- optimisation ---
    lr: float | None = None
    """Adam learning rate after warm-up. Unset: 4e-4 / √(d_sae / 16384) (twice sparsify's rule;
    1.6e-3 for 1024 latents), times 6 for relu/jumprelu (see `schedule.resolve`)."""
    lr_warmup_steps: int | None = None
    """Linear warm-up from 0 to lr. Unset: 5% of the steps."""
    lr_decay: LRDecay = "linear"
    """Decay to 0 over the last `lr_decay_fraction` of the steps (none: constant)."""
    lr_decay_fraction: float = 0.2
    """Fraction of training over which the learning rate decays."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's (β1, β2)."""
    grad_clip: float = 1.0
    """Maximum global gradient norm per SAE (0 disables)."""
    l1_convention: L1Convention = "scaled"
    """How λ weighs sparsity. scaled: loss = FVU + λ·E[Σ_s f_s]/σ (relu) or FVU + λ·E[L0]
    (jumprelu), σ² = E‖x − E x‖² on the init sample, so one λ range fits any width, dictionary
    size and input scale; mean: seed 001's MSE mean over inputs × dims + λ·mean over inputs ×
    latents of f (relu) or [h > θ] (jumprelu)."""
    l1_warmup_steps: int | None = None
    """Linear warm-up of λ from 0. Unset: 5% of the steps for relu/jumprelu (0: none)."""
    refit: Refit = "scale"
    """relu and jumprelu, after training, with the support (which latents fire on each input) frozen:
    refit on the reconstruction alone, in closed form (`refit.py`; Wright & Sharkey 2024), which
    undoes the L1's shrinkage at the same L0. scale: each latent's scale and b_dec (the decoder
    directions, so the dictionary, stay); decoder: the decoder rows too (a little more EV, the
    directions move); none: off. The weights before it are kept in before_refit/."""
    refit_rows: int = 262_144
    """Rows drawn at random from the whole file for the refit's least squares."""

    # --- initialisation ---
    b_dec_init: BiasInit = "geometric_median"
    """Decoder bias init: geometric median (PatchSAE, seed 004), mean, or zeros."""
    init_rows: int = 8_192
    """Rows drawn at random from the whole file for the bias init, the encoder scale, the
    normalisation constant and σ."""

    # --- dead latents ---
    dead_latents: DeadLatents = "auto"
    """auto: AuxK for topk/batchtopk/matryoshka, resampling for relu/jumprelu; or force one, or none."""
    dead_after_samples: int = 1_000_000
    """A latent that has not fired for this many inputs counts as dead (capped at one epoch)."""
    aux_k: int | None = None
    """Dead latents per input used by the AuxK loss. Unset: d_in / 2, at most 512 (the heuristic
    of Gao et al.'s appendix B.1, as sparsify)."""
    aux_coefficient: float = 1 / 32
    """Weight α of the AuxK loss."""
    resample_every: int | None = None
    """Steps between dead-latent resamplings (relu/jumprelu). Unset: 1/10 of the steps."""
    resample_until: float = 0.5
    """Fraction of training after which dead latents are no longer resampled: a resampled latent
    fires on many inputs until training settles it, which the last steps could not do."""

    # --- bookkeeping ---
    log_every: int = 50
    """Steps between metric lines in train.log."""
    checkpoint_every: int = 1_000
    """Steps between checkpoints (0 disables)."""
    batchtopk_threshold_momentum: float = 0.99
    """EMA momentum of the inference threshold of batchtopk/matryoshka."""

    def __post_init__(self) -> None:
        _check_choice("lr_decay", self.lr_decay, get_args(LRDecay))
        _check_choice("b_dec_init", self.b_dec_init, get_args(BiasInit))
        _check_choice("dead_latents", self.dead_latents, get_args(DeadLatents))
        _check_choice("l1_convention", self.l1_convention, get_args(L1Convention))
        _check_choice("refit", self.refit, get_args(Refit))
        positive = {
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "block_rows": self.block_rows,
            "chunk_rows": self.chunk_rows,
            "lr": self.lr,
            "init_rows": self.init_rows,
            "refit_rows": self.refit_rows,
            "aux_k": self.aux_k,
            "resample_every": self.resample_every,
            "log_every": self.log_every,
            "dead_after_samples": self.dead_after_samples,
        }
        for name, value in positive.items():
            if value is not None and not value > 0:  # None: chosen automatically (schedule.resolve)
                raise ValueError(f"{name} must be > 0; got {value}")
        for name in ("lr_warmup_steps", "l1_warmup_steps", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0; got {value}")
        if not 0 <= self.resample_until <= 1:
            raise ValueError(f"resample_until must be in [0, 1]; got {self.resample_until}")
        if not 0 <= self.lr_decay_fraction <= 1:
            raise ValueError(f"lr_decay_fraction must be in [0, 1]; got {self.lr_decay_fraction}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0; got {self.grad_clip}")
        if not 0 <= self.batchtopk_threshold_momentum < 1:
            raise ValueError("batchtopk_threshold_momentum must be in [0, 1)")

    @property
    def batch_seed(self) -> int:
        """The seed of the batches and of the init sample (data_seed, else seed)."""
        return self.seed if self.data_seed is None else self.data_seed

    AUTO_FIELDS = ("batch_size", "lr", "lr_warmup_steps", "l1_warmup_steps", "resample_every", "aux_k")
    """Fields that may be left unset (None) and are then chosen by `schedule.resolve`."""

    def unresolved(self) -> list[str]:
        """The fields still to be chosen automatically."""
        return [name for name in self.AUTO_FIELDS if getattr(self, name) is None]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(**d)


DEFAULT_L1 = {"relu": 0.2, "jumprelu": 0.01}
TRAIN_NORMALIZE = {a: "centred_unit_norm" for a in ("topk", "batchtopk", "matryoshka", "relu", "jumprelu")}
"""`clipsae train`'s normalisation when --normalize is not given (the Python API's SAEConfig
default stays none). Real encoder activations share a large mean and have rare inputs of ~10×
the norm: raw, those inputs hold most of the squared error, take most of a batch's k·B slots
(batchtopk, matryoshka) and pull the dictionary to themselves. On `synthetic.encoder_like`
(benchmarks/bench_encoder_like.py, seed 0, issue 20) centred_unit_norm raised held-out EV over
none from 0.75 to 0.89 (topk, k=8) and from 0.69 at L0 19.7 to 0.90 at L0 19.2 (relu, default
λ each), mean-max-cosine from 0.61 to 0.80 and 0.46 to 0.93; unit_norm is in between (topk 0.85). On zero-mean planted data it is as good as
none. SAELens has no formula for it: `clipsae convert --to saelens` refuses such an SAE, so
train with --normalize none or unit_norm to export one."""
"""λ when --l1 is not given, in the scaled convention (README "Loss convention"), chosen with
centred_unit_norm inputs: relu's is E[Σ f]/σ's weight (0.2: L0 ≈ 3× the true L0 on
`synthetic.py`'s planted data and encoder_like), jumprelu's the FVU an active latent must buy
(0.01: L0 ≈ the true L0 there)."""


L1_SWEEP = {"relu": (0.01, 1.0), "jumprelu": (0.001, 0.1)}
"""`--l1 sweep`'s range (scaled convention) per architecture: wide enough to hold the sparse,
recovering band on the planted data of docs/training.md (relu ≈ 0.05–0.3) with room on both sides."""
L1_SWEEP_PER_DECADE = 4
"""Log-spaced points per decade of `--l1 sweep` (issue 20: a decade sweep jumped over the usable band)."""


def l1_sweep(architecture: str) -> tuple[float, ...]:
    """The λ values of `--l1 sweep`: L1_SWEEP's range, L1_SWEEP_PER_DECADE log-spaced points per
    decade, both ends included, rounded to 3 significant digits (relu: 0.01, 0.0178, 0.0316, …, 1)."""
    lo, hi = L1_SWEEP[architecture]
    n = round(math.log10(hi / lo) * L1_SWEEP_PER_DECADE)
    return tuple(float(f"{lo * 10 ** (i / L1_SWEEP_PER_DECADE):.3g}") for i in range(n + 1))


@dataclass(frozen=True)
class SweepConfig:
    """What `clipsae train` reads and writes, and the values it sweeps: one SAE per combination
    of the values of --k or --l1 and --seed, all trained in one pass over the same batches."""

    acts: str
    """A .npy matrix [N, d] or an activation cache folder."""
    out: str
    """Output folder (one sub-folder per swept value)."""
    k: tuple[int, ...] | None = field(default=None, metadata=COMMAS)
    """Active latents per input for topk/batchtopk/matryoshka; a comma list sweeps."""
    groups: tuple[int, ...] | None = field(default=None, metadata=COMMAS)
    """matryoshka: nested prefix sizes g1,g2,...,d_sae (increasing, the last = --d-sae)."""
    l1: tuple[float, ...] | None = field(default=None, metadata=COMMAS_OR_SWEEP)
    """Sparsity coefficient λ (relu: L1, jumprelu: L0) in the --l1-convention; a comma list sweeps;
    `sweep`: the documented log-spaced sweep, 4 values per decade (`L1_SWEEP`: relu 0.01..1,
    jumprelu 0.001..0.1) in one pass (default: relu 0.07, jumprelu 0.03)."""
    seed: tuple[int, ...] | None = field(default=None, metadata=COMMAS)
    """Seeds the weight init and the resampling draws, and (unless --data-seed) the chunk order,
    the within-block shuffles and the init sample (default 0). A comma list trains one SAE per
    seed on the batches of the first (or of --data-seed)."""
    resume: bool = False
    """Continue from OUT/checkpoint exactly."""
    overwrite: bool = False
    """Replace SAEs already in OUT."""

    def values(self, architecture: str) -> tuple[list[int | None], list[float]]:
        """(k values, λ values) to train for `architecture`; a ValueError names a flag it does not use."""
        if architecture in K_ARCHS:
            if not self.k:
                raise ValueError(f"--arch {architecture} needs --k (for example --k 32, or --k 16,32,64 to sweep)")
            if self.l1:
                raise ValueError(f"--l1 is for relu/jumprelu; --arch {architecture} is sparse by --k")
            return list(self.k), [0.0]
        if self.k:
            raise ValueError(f"--k is for {'/'.join(sorted(K_ARCHS))}; --arch {architecture} uses --l1")
        if self.l1 == ("sweep",):
            return [None], list(l1_sweep(architecture))
        if self.l1 and any(isinstance(v, str) for v in self.l1):
            raise ValueError(f"--l1: numbers or the word sweep; got {','.join(map(str, self.l1))}")
        return [None], list(self.l1 or [DEFAULT_L1[architecture]])


@dataclass(frozen=True)
class MetricsConfig:
    """One `clipsae metrics` run."""

    sae: str
    """An SAE folder, or a folder of them (a sweep)."""
    acts: str | None = None
    """A .npy matrix or an activation cache folder (held-out rows); needed unless --compare is given."""
    compare: tuple[str, ...] = ()
    """Other SAEs (folders, or sweep folders: each SAE in them), e.g. other seeds: match each
    SAE's decoder one-to-one against theirs (Hungarian on decoder cosines) and report the
    fraction of latents matched at cos >= --stability-threshold and the mean matched cosine."""
    stability_threshold: float = 0.9
    """Seed stability: the decoder cosine at which a matched pair counts."""
    out: str | None = None
    """Also write the Markdown table here (+ .json)."""
    batch_size: int = 8192
    """Rows per forward pass."""
    max_rows: int | None = None
    """Evaluate on the first N rows only (default: all)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""
