"""Our SAE folders (the SAELens layout), written atomically, loaded without unpickling.

Folder layout (format version `FORMAT_VERSION`, see FORMAT.md):
    cfg.json                  SAEConfig fields + format/format_version + model_name/hook_name
    sae_weights.safetensors   W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae],
                              b_dec [d_in], threshold [d_sae] (jumprelu, batchtopk, matryoshka)

Version 1 folders still load: their layer_norm is the clipsae-v1 variant (biased std + 1e-6),
recorded as `layer_norm_variant` from version 2 on. Other tools' files go through
`sae_core.interop` (`clipsae convert`, `clipsae export-sae`), not through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .config import ARCHITECTURES, SAEConfig
from .files import atomic_write_dir, read_safetensors
from .rules import THRESHOLD_ARCHS
from .sae import SparseAutoencoder

FORMAT_NAME = "clipsae-sae"
FORMAT_VERSION = 2
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"


# ---------------------------------------------------------------- save / load
def sae_state_tensors(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    """The SAELens tensors of an SAE (contiguous CPU copies in the configured dtype)."""
    dtype = getattr(torch, sae.cfg.dtype)
    tensors = {
        "W_enc": sae.W_enc,
        "W_dec": sae.W_dec,
        "b_enc": sae.b_enc,
        "b_dec": sae.b_dec,
    }
    threshold = sae.threshold_s
    if threshold is not None:
        tensors["threshold"] = threshold
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}


def cfg_json(cfg: SAEConfig) -> dict[str, Any]:
    """The cfg.json dict: our SAEConfig fields, the format tag, and top-level `model_name` /
    `hook_name` copies where SAELens readers look (omitted when unknown: never null)."""
    d = cfg.to_dict()
    d["format"] = FORMAT_NAME
    d["format_version"] = FORMAT_VERSION
    for key in ("model_name", "hook_name"):
        value = cfg.metadata.get(key)
        if value is not None:
            d[key] = str(value)
    return d


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write `cfg.json` + `sae_weights.safetensors` to `path` atomically."""
    tensors = sae_state_tensors(sae)

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
        (tmp / CFG_FILE).write_text(json.dumps(cfg_json(sae.cfg), indent=2))

    return atomic_write_dir(path, fill)


def _all_finite(t: torch.Tensor) -> bool:
    """Exactly `isfinite(t).all()`: a finite float64 sum proves it in one pass without a
    boolean copy (NaN and inf propagate through a sum); an infinite sum is checked element-wise."""
    return bool(torch.isfinite(t.sum(dtype=torch.float64))) or bool(torch.isfinite(t).all())


def _validate(cfg: SAEConfig, tensors: dict[str, torch.Tensor], where: str) -> None:
    d, s = cfg.d_in, cfg.d_sae
    expected = {"W_enc": (d, s), "W_dec": (s, d), "b_enc": (s,), "b_dec": (d,)}
    if cfg.architecture in THRESHOLD_ARCHS:
        expected["threshold"] = (s,)
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(f"{where}: missing tensor {name!r} (expected shape {list(shape)})")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{where}: {name} has shape {list(tensors[name].shape)}, expected {list(shape)} for d_in={d}, d_sae={s}"
            )
        if not _all_finite(tensors[name]):
            raise ValueError(f"{where}: {name} contains NaN or inf values; the SAE is broken")


def sae_from_tensors(cfg: SAEConfig, tensors: dict[str, torch.Tensor], where: str = "SAE") -> SparseAutoencoder:
    """Build an SAE from SAELens tensors after checking shapes and finiteness."""
    _validate(cfg, tensors, where)
    with torch.device("meta"):  # no random init to overwrite (costly at the seeds' sizes)
        sae = SparseAutoencoder(cfg)
    names = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if cfg.architecture in THRESHOLD_ARCHS else [])
    for name in names:
        value = tensors[name].float().contiguous()
        if isinstance(getattr(sae, name), torch.nn.Parameter):
            value = torch.nn.Parameter(value)
        setattr(sae, name, value)  # a registered parameter or buffer keeps its kind
    sae.relu_density = torch.ones((), dtype=torch.float64)  # as a new SAE: training state, not saved
    unset = [n for n, t in [*sae.named_parameters(), *sae.named_buffers()] if t.is_meta]
    if unset:
        raise AssertionError(f"sae_from_tensors left {unset} unset")  # a new field of SparseAutoencoder
    return sae


def read_cfg(path: Path) -> dict[str, Any]:
    """The checked cfg.json dict of an SAE folder of ours (any format version up to ours)."""
    cfg_path = path / CFG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"{path} has no {CFG_FILE}; expected an SAE folder (cfg.json + {WEIGHTS_FILE})")
    raw = json.loads(cfg_path.read_text())
    if raw.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{cfg_path} is not a clipsae SAE (format {raw.get('format')!r}); for another tool's folder "
            "(SAELens, sparsify, ViT-Prisma, ...) run `clipsae convert SRC DST` first"
        )
    version = raw.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"{cfg_path} has format_version {version!r}; this clipsae reads 1 to {FORMAT_VERSION}")
    if version == 1:  # version 1 had one layer_norm: the biased std + 1e-6
        raw.setdefault("layer_norm_variant", "clipsae-v1")
    arch = raw.get("architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{cfg_path}: unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    return raw


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load an SAE folder (SAELens layout). Never unpickles."""
    path = Path(path)
    raw = read_cfg(path)
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(f"{path} has no {WEIGHTS_FILE}")
    cfg = SAEConfig.from_dict(raw)
    sae = sae_from_tensors(cfg, read_safetensors(weights), where=str(path))
    return sae.to(device).eval()


def find_sae_dirs(path: str | Path) -> list[Path]:
    """`path` itself if it is an SAE folder, else its sub-folders that are (a sweep), sorted."""
    path = Path(path)
    if (path / CFG_FILE).exists():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{CFG_FILE}"))
    if not found:
        raise FileNotFoundError(f"no SAE under {path}: expected {CFG_FILE} there or in its sub-folders")
    return found
