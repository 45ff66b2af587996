"""SAE files in the SAELens layout, written atomically, loaded without unpickling.

Folder layout (format version `FORMAT_VERSION`):
    cfg.json                  SAEConfig fields + format/format_version + model_name/hook_name
    sae_weights.safetensors   W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae],
                              b_dec [d_in], threshold [d_sae] (jumprelu, batchtopk, matryoshka)

Converters read ViT-Prisma folders (`config.json` + `weights.pt`, via
`torch.load(weights_only=True)`) and EleutherAI sparsify folders (`cfg.json` +
`sae.safetensors`).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import ARCHITECTURES, SAEConfig
from .files import atomic_write_dir
from .rules import THRESHOLD_ARCHS
from .sae import SparseAutoencoder

FORMAT_NAME = "clipsae-sae"
FORMAT_VERSION = 1
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
    d = cfg.to_dict()
    d["format"] = FORMAT_NAME
    d["format_version"] = FORMAT_VERSION
    # Top-level keys SAELens readers look for.
    d["model_name"] = cfg.metadata.get("model_name")
    d["hook_name"] = cfg.metadata.get("hook_name")
    return d


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write `cfg.json` + `sae_weights.safetensors` to `path` atomically."""
    tensors = sae_state_tensors(sae)

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
        (tmp / CFG_FILE).write_text(json.dumps(cfg_json(sae.cfg), indent=2))

    return atomic_write_dir(path, fill)


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
                f"{where}: {name} has shape {list(tensors[name].shape)}, expected {list(shape)} "
                f"for d_in={d}, d_sae={s}"
            )
        if not torch.isfinite(tensors[name]).all():
            raise ValueError(f"{where}: {name} contains NaN or inf values; the SAE is broken")
    if cfg.architecture == "jumprelu" and not (tensors["threshold"] > 0).all():
        raise ValueError(f"{where}: jumprelu thresholds must be positive")


def sae_from_tensors(cfg: SAEConfig, tensors: dict[str, torch.Tensor], where: str = "SAE") -> SparseAutoencoder:
    """Build an SAE from SAELens tensors after checking shapes and finiteness."""
    _validate(cfg, tensors, where)
    sae = SparseAutoencoder(cfg)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, name).copy_(tensors[name].float())
        if cfg.architecture in THRESHOLD_ARCHS:
            sae.threshold.copy_(tensors["threshold"].float())
    return sae


def read_cfg(path: Path) -> dict[str, Any]:
    cfg_path = path / CFG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"{path} has no {CFG_FILE}; expected an SAE folder (cfg.json + {WEIGHTS_FILE})")
    raw = json.loads(cfg_path.read_text())
    version = raw.get("format_version", FORMAT_VERSION)
    if raw.get("format", FORMAT_NAME) == FORMAT_NAME and version > FORMAT_VERSION:
        raise ValueError(f"{cfg_path} has format_version {version}; this clipsae reads up to {FORMAT_VERSION}")
    arch = raw.get("architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"{cfg_path}: unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)} "
            "(for another tool's folder, run `clipsae convert SRC DST` first)"
        )
    return raw


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load an SAE folder (SAELens layout). Never unpickles."""
    path = Path(path)
    raw = read_cfg(path)
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(f"{path} has no {WEIGHTS_FILE}")
    cfg = SAEConfig.from_dict(raw)
    sae = sae_from_tensors(cfg, load_file(str(weights)), where=str(path))
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


# ---------------------------------------------------------------- converters
def _prisma_to_sae(src: Path) -> SparseAutoencoder:
    raw = json.loads((src / "config.json").read_text())
    try:
        state = torch.load(src / "weights.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{src}/weights.pt was refused: it holds more than plain tensors ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{src}/weights.pt does not hold a dict of tensors")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if "W_enc" not in tensors:
        raise ValueError(f"{src}/weights.pt has no W_enc; keys: {sorted(tensors)}")
    d_in = int(raw.get("d_in", tensors["W_enc"].shape[0]))
    d_sae = int(raw.get("d_sae") or d_in * int(raw.get("expansion_factor", 0)) or tensors["W_enc"].shape[1])
    act = str(raw.get("activation_fn_str", raw.get("architecture", "relu"))).lower()
    kwargs = raw.get("activation_fn_kwargs") or {}
    arch_map = {"relu": "relu", "standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}
    if act not in arch_map:
        raise ValueError(f"{src}/config.json: unknown activation {act!r}; expected one of {', '.join(arch_map)}")
    arch = arch_map[act]
    norm = raw.get("normalize_activations") or "none"
    if norm not in ("none", "layer_norm", "expected_average_only_in"):
        raise ValueError(f"{src}/config.json: unsupported normalize_activations {norm!r}")
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        architecture=arch,  # type: ignore[arg-type]
        k=int(kwargs.get("k", raw.get("k", 0))) if arch in ("topk", "batchtopk") else None,
        normalize_activations=norm,
        norm_scaling_factor=raw.get("norm_scaling_factor"),
        metadata={
            "model_name": raw.get("model_name"),
            "hook_name": raw.get("hook_point", raw.get("hook_name")),
            "converted_from": "vit-prisma",
        },
    )
    if "b_dec" not in tensors:
        tensors["b_dec"] = torch.zeros(d_in)
    return sae_from_tensors(cfg, tensors, where=str(src))


def _sparsify_to_sae(src: Path) -> SparseAutoencoder:
    raw = json.loads((src / "cfg.json").read_text())
    t = load_file(str(src / "sae.safetensors"))
    for name in ("encoder.weight", "encoder.bias", "W_dec", "b_dec"):
        if name not in t:
            raise ValueError(f"{src}/sae.safetensors is missing {name!r}; keys: {sorted(t)}")
    d_sae, d_in = t["encoder.weight"].shape
    if raw.get("d_in") not in (None, d_in):
        raise ValueError(f"{src}: cfg.json says d_in={raw['d_in']} but encoder.weight is {list(t['encoder.weight'].shape)}")
    if raw.get("transcode") or raw.get("skip_connection"):
        raise ValueError(f"{src}: transcoders and skip connections are not supported")
    k = int(raw.get("k", 0))
    if k <= 0:
        raise ValueError(f"{src}/cfg.json: sparsify SAEs are TopK and need k > 0; got {raw.get('k')!r}")
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=k, metadata={"converted_from": "sparsify"})
    tensors = {"W_enc": t["encoder.weight"].T, "b_enc": t["encoder.bias"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    return sae_from_tensors(cfg, tensors, where=str(src))


def detect_layout(src: str | Path) -> str:
    """'clipsae' | 'vit-prisma' | 'sparsify' for a folder, or a clear error."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder")
    if (src / "config.json").exists() and (src / "weights.pt").exists():
        return "vit-prisma"
    if (src / "cfg.json").exists() and (src / "sae.safetensors").exists():
        return "sparsify"
    if (src / CFG_FILE).exists() and (src / WEIGHTS_FILE).exists():
        return "clipsae"
    raise ValueError(
        f"{src}: unknown SAE layout; expected ViT-Prisma (config.json + weights.pt), "
        f"sparsify (cfg.json + sae.safetensors) or SAELens ({CFG_FILE} + {WEIGHTS_FILE})"
    )


def convert(src: str | Path, dst: str | Path) -> tuple[str, SparseAutoencoder]:
    """Convert an SAE folder of another tool into our layout at `dst`; returns (layout, sae)."""
    layout = detect_layout(src)
    src = Path(src)
    if layout == "vit-prisma":
        sae = _prisma_to_sae(src)
    elif layout == "sparsify":
        sae = _sparsify_to_sae(src)
    else:
        sae = load_sae(src)
    save_sae(sae, dst)
    return layout, sae
