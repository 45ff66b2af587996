"""The exact folds every importer shares, and the safe readers of foreign files.

An importer reads a foreign SAE into a `Draft` (float64 tensors in our convention,
`h = (x − b_dec) @ W_enc + b_enc`, `x̂ = f @ W_dec + b_dec`), then folds whatever the source
does differently into the weights, each fold an identity of the maths:

- no b_dec subtraction before encoding:   b_enc += b_dec @ W_enc
- codes scaled by the decoder row norms n: W_enc *= n, b_enc *= n, W_dec /= n (same codes)
- an input map z = (x − μ) @ M in front:   W_enc = M W_enc, b_dec = μ + b_dec M⁻¹, W_dec = W_dec M⁻¹
  (a constant scale s is M = s·I)
- a gated encoder (weight sharing):       jumprelu with W_enc·e^r, b_mag, θ = b_mag − e^r·b_gate

Folding runs in float64; the SAE is stored in float32. What cannot be folded is refused
with a `Refused` naming the field and its value, never approximated.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import SAEConfig
from ..errors import UserError
from ..io import sae_from_tensors
from ..sae import SparseAutoencoder


class Refused(UserError):
    """A foreign file holds something clipsae cannot honour exactly; the message names it."""


@dataclass
class Draft:
    """A foreign SAE on its way in: float64 tensors in our convention + what to record."""

    architecture: str
    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    threshold: Tensor | None = None
    k: int | None = None
    normalize: str = "none"
    layer_norm_variant: str = "saelens"
    metadata: dict[str, Any] = field(default_factory=dict)
    folds: list[str] = field(default_factory=list)
    """What was folded into the weights, in words (kept in metadata.converted_folds)."""

    def __post_init__(self) -> None:
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.detach().to("cpu", torch.float64).clone())

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    # ------------------------------------------------------------------ folds
    def fold_input_bias(self, why: str) -> None:
        """The source encodes x @ W_enc + b_enc (no b_dec subtracted): b_enc += b_dec @ W_enc."""
        self.b_enc = self.b_enc + self.b_dec @ self.W_enc
        self.folds.append(f"b_enc += b_dec @ W_enc ({why})")

    def fold_decoder_norms(self, why: str) -> None:
        """The source scales codes by the decoder row norms n and decodes (f/n) @ W_dec."""
        n = self.W_dec.norm(dim=1)
        if not bool((n > 0).all()):
            raise Refused(f"{why}: a decoder row has norm 0, so the codes are undefined")
        self.W_enc = self.W_enc * n
        self.b_enc = self.b_enc * n
        self.W_dec = self.W_dec / n[:, None]
        self.folds.append(f"decoder row norms folded into W_enc, b_enc ({why})")

    def fold_input_scale(self, scale: float, why: str) -> None:
        """The source reads s·x: W_enc *= s, b_dec /= s, W_dec /= s (same codes)."""
        if not scale > 0:
            raise Refused(f"{why}: the input scale must be > 0; got {scale!r}")
        self.W_enc = self.W_enc * scale
        self.b_dec = self.b_dec / scale
        self.W_dec = self.W_dec / scale
        self.folds.append(f"input scale {scale!r} folded ({why})")

    def fold_input_affine(self, mean: Tensor, matrix: Tensor, inverse: Tensor, why: str) -> None:
        """The source reads (x − μ) @ M and maps its output back with y @ M⁻¹ + μ."""
        mean, matrix, inverse = (t.to(torch.float64) for t in (mean, matrix, inverse))
        d = self.d_in
        if tuple(mean.shape) != (d,) or tuple(matrix.shape) != (d, d) or tuple(inverse.shape) != (d, d):
            raise Refused(
                f"{why}: whitening shapes {list(mean.shape)}, {list(matrix.shape)}, "
                f"{list(inverse.shape)} do not match d_in={d}"
            )
        self.W_enc = matrix @ self.W_enc
        self.b_dec = mean + self.b_dec @ inverse
        self.W_dec = self.W_dec @ inverse
        self.folds.append(f"input whitening folded ({why})")

    # ------------------------------------------------------------------ build
    def to_sae(self, where: str) -> SparseAutoencoder:
        """Our SAE (float32), after checking shapes and finiteness (`io.sae_from_tensors`)."""
        metadata = dict(self.metadata)
        if self.folds:
            metadata["converted_folds"] = list(self.folds)
        cfg = SAEConfig(
            d_in=self.d_in,
            d_sae=self.d_sae,
            architecture=self.architecture,  # type: ignore[arg-type]
            k=self.k,
            normalize_activations=self.normalize,  # type: ignore[arg-type]
            layer_norm_variant=self.layer_norm_variant,
            metadata=metadata,
        )  # type: ignore[arg-type]
        tensors = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        if self.threshold is not None:
            tensors["threshold"] = self.threshold
        return sae_from_tensors(cfg, {k: v.float() for k, v in tensors.items()}, where=where)


def gated_to_jumprelu(W_enc: Tensor, b_gate: Tensor, r_mag: Tensor, b_mag: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(W_enc, b_enc, θ) of the JumpReLU that equals a weight-shared gated encoder.

    Gated: f = [x·W + b_gate > 0] · relu(e^r·(x·W) + b_mag). With m = e^r·(x·W) + b_mag the
    gate is m > b_mag − e^r·b_gate (e^r > 0), so f = relu(m)·[m > θ]: our jumprelu rule."""
    scale = r_mag.to(torch.float64).exp()
    return W_enc.to(torch.float64) * scale, b_mag.to(torch.float64), b_mag.to(torch.float64) - scale * b_gate


def check_keys(tensors: dict[str, Tensor], allowed: set[str], where: str, what: str) -> None:
    """Refuse tensors this importer does not know (they would change the SAE's function)."""
    unknown = sorted(set(tensors) - allowed)
    if unknown:
        raise Refused(
            f"{where}: unknown tensor(s) {', '.join(unknown)} for {what}; clipsae honours "
            f"{', '.join(sorted(allowed))} only, and refuses the rest rather than ignore it"
        )


def need(tensors: dict[str, Tensor], names: tuple[str, ...], where: str) -> None:
    """Refuse a file that lacks a tensor the source's forward needs."""
    missing = [n for n in names if n not in tensors]
    if missing:
        raise Refused(f"{where}: missing tensor(s) {', '.join(missing)}; found {', '.join(sorted(tensors)) or 'none'}")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or a clear error."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds {type(value).__name__}, expected a JSON object")
    return value


def load_pt(source: Path | bytes, where: str, stubs: dict[str, type] | None = None) -> Any:
    """`torch.load(weights_only=True)`: tensors and plain containers only, never code.

    `stubs` maps a pickled class's full name to an inert stand-in (a class without methods)
    whose fields the unpickler fills as plain data, so a config object saved beside the
    tensors can be read without importing, let alone running, the class it names."""
    damage = _damage(source)
    if damage:
        raise Refused(f"{where} {damage}")
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    allowed = [(cls, name) for name, cls in (stubs or {}).items()]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(stream, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, AttributeError, TypeError) as exc:  # what weights_only refuses to build
        raise Refused(
            f"{where} was refused: clipsae reads only plain tensors from .pt files "
            f"(torch.load weights_only=True) and this one holds more ({_first_line(exc)})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise Refused(
            f"{where} is not a readable torch file ({size:,} bytes; torch.load: {_first_line(exc)}); "
            "if it was copied or downloaded, it may be incomplete: fetch it again"
        ) from None


ZIP_MAGIC = b"PK\x03\x04"
"""How a `torch.save` file (a zip archive since torch 1.6) begins."""


def _damage(source: Path | bytes) -> str | None:
    """What is wrong with a torch.save zip archive that cannot be opened (a truncated copy or
    download loses the archive's directory, which zip keeps at the end), else None. Reads the
    first bytes and the directory only."""
    if isinstance(source, bytes):
        head, size, opened = source[:4], len(source), io.BytesIO(source)
    else:
        with open(source, "rb") as fh:
            head = fh.read(4)
        size, opened = Path(source).stat().st_size, source
    if size == 0:
        return "is empty (0 bytes)"
    if head != ZIP_MAGIC:
        return None  # torch's legacy format or no torch file: torch.load says which
    try:
        with zipfile.ZipFile(opened) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        return (
            f"is truncated or damaged: it begins as a torch.save zip archive but its end is missing or broken "
            f"({exc}; {size:,} bytes); copy or download it again"
        )
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def tensor_dict(state: Any, where: str) -> dict[str, Tensor]:
    """The state dict itself: a dict of tensors, or a clear refusal."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise Refused(f"{where} does not hold a dict of named tensors")
    bad = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
    if bad:
        raise Refused(f"{where}: entries {', '.join(bad)} are not tensors")
    return dict(state)


def integral(value: Any, name: str, where: str) -> int:
    """An integer-valued field (JSON may hold 32 or 32.0), or a refusal naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value) or value <= 0:
        raise Refused(f"{where}: {name}={value!r} is not a positive integer")
    return int(value)
