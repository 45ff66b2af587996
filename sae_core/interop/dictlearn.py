"""dictionary-learning (saprmarks) `trainer_N/ae.pt` + `config.json`, exactly.

`config.json` (written by its `trainSAE`) names the class in `trainer.dict_class`; `ae.pt`
is the class's state dict (plain tensors, read with weights_only=True). Without the config
the class is ambiguous (AutoEncoderTopK and BatchTopKSAE share their tensors), so it is
required. Classes, as each one's `encode` / `from_pretrained` defines it:
- AutoEncoder: relu(encoder(x − bias)); `from_pretrained` folds the decoder column norms
  into the encoder unless they are already 1 (we do the same, so the codes match).
- AutoEncoderNew: relu(encoder(x)), decoder with bias: b_dec = decoder.bias, folded.
- GatedAutoEncoder: the equivalent jumprelu (see common.gated_to_jumprelu).
- JumpReluAutoEncoder: relu(h)·[h > θ] with `apply_b_dec_to_input=False` (its default):
  folded. A JumpReLU never becomes a ReLU.
- AutoEncoderTopK: topk with its `k` buffer (its `threshold` buffer is used only by
  `encode(use_threshold=True)`; kept in metadata).
- BatchTopKSAE, MatryoshkaBatchTopKSAE: encode uses the threshold by default: our batchtopk
  with θ = `threshold`, k = `k` (matryoshka `group_sizes` only shape training).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .common import Draft, Refused, check_keys, gated_to_jumprelu, integral, load_pt, need, read_json, tensor_dict

_KEYS = {
    "AutoEncoder": {"bias", "encoder.weight", "encoder.bias", "decoder.weight"},
    "AutoEncoderNew": {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"},
    "GatedAutoEncoder": {"decoder_bias", "encoder.weight", "r_mag", "gate_bias", "mag_bias", "decoder.weight"},
    "JumpReluAutoEncoder": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
    "AutoEncoderTopK": {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold"},
    "BatchTopKSAE": {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold"},
    "MatryoshkaBatchTopKSAE": {"W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"},
}


def dictlearn_files(src: Path) -> tuple[Path, Path] | None:
    """(ae.pt, config.json) when `src` is a trainer folder or its ae.pt, else None."""
    folder = src if src.is_dir() else src.parent
    weights = src if src.is_file() else folder / "ae.pt"
    config = folder / "config.json"
    if not (weights.is_file() and config.is_file()):
        return None
    try:
        return (weights, config) if "trainer" in read_json(config) else None
    except ValueError:
        return None


def without_config(weights: Path, keys: set[str] | None = None) -> str | None:
    """Why a dictionary-learning `ae.pt` (named so, or with one of its classes' tensors: `keys`)
    cannot be read alone, else None (not dictionary-learning's)."""
    classes = sorted(c for c, k in _KEYS.items() if keys == k) if keys is not None else []
    if weights.name != "ae.pt" and not classes:
        return None
    config = weights.parent / "config.json"
    found = (
        "its config.json has no 'trainer' section (not the one trainSAE writes)"
        if config.is_file()
        else "there is no config.json beside it"
    )
    what = f"the tensors of {' or '.join(classes)}" if classes else "a dictionary-learning ae.pt"
    return (
        f"{weights}: {what}, but {found}: dictionary-learning records the class in config.json's "
        "trainer.dict_class, and the tensors cannot tell (AutoEncoderTopK and BatchTopKSAE have the same "
        "ones and different activations); copy the trainer_N/config.json that trainSAE wrote next to ae.pt"
    )


def read_dictlearn(weights: Path, config: Path) -> Draft:
    """A dictionary-learning SAE as a Draft."""
    cfg = read_json(config)
    trainer = cfg.get("trainer") or {}
    cls = trainer.get("dict_class")
    if cls not in _KEYS:
        raise Refused(f"{config}: trainer.dict_class={cls!r} is not one clipsae reads ({', '.join(sorted(_KEYS))})")
    t = {k: v.to(torch.float64) for k, v in tensor_dict(load_pt(weights, str(weights)), str(weights)).items()}
    check_keys(t, _KEYS[cls], str(weights), cls)
    need(t, tuple(sorted(_KEYS[cls])), str(weights))
    draft = _draft(cls, t, str(weights))
    if "k" in t and trainer.get("k") is not None and int(t["k"]) != trainer["k"]:
        raise Refused(f"{config}: trainer.k={trainer['k']!r} but the ae.pt buffer k is {int(t['k'])}")
    for dim, name in ((draft.d_in, "activation_dim"), (draft.d_sae, "dict_size")):
        if trainer.get(name) not in (None, dim):
            raise Refused(f"{config}: trainer.{name}={trainer[name]!r} but the tensors give {dim}")
    draft.metadata.update({"converted_from": "dictionary-learning", "source_cfg": cfg})
    if trainer.get("submodule_name"):
        draft.metadata["source_hook_name"] = trainer["submodule_name"]
    if trainer.get("lm_name"):
        draft.metadata["source_model_name"] = trainer["lm_name"]
    return draft


def _draft(cls: str, t: dict[str, torch.Tensor], where: str) -> Draft:
    if cls == "AutoEncoder":
        draft = Draft("relu", t["encoder.weight"].T, t["encoder.bias"], t["decoder.weight"].T, t["bias"])
        norms = t["decoder.weight"].norm(dim=0)
        if not torch.allclose(norms, torch.ones_like(norms)):  # AutoEncoder.from_pretrained's rule
            draft.fold_decoder_norms("AutoEncoder.from_pretrained normalizes the decoder")
        return draft
    if cls == "AutoEncoderNew":
        draft = Draft("relu", t["encoder.weight"].T, t["encoder.bias"], t["decoder.weight"].T, t["decoder.bias"])
        draft.fold_input_bias("AutoEncoderNew encodes x without subtracting the decoder bias")
        return draft
    if cls == "GatedAutoEncoder":
        w, b, theta = gated_to_jumprelu(t["encoder.weight"].T, t["gate_bias"], t["r_mag"], t["mag_bias"])
        draft = Draft("jumprelu", w, b, t["decoder.weight"].T, t["decoder_bias"], threshold=theta)
        draft.folds.append("gated encoder as jumprelu: W·e^r_mag, mag_bias, θ = mag_bias − e^r_mag·gate_bias")
        return draft
    if cls == "JumpReluAutoEncoder":
        draft = Draft("jumprelu", t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], threshold=t["threshold"])
        draft.fold_input_bias("JumpReluAutoEncoder.apply_b_dec_to_input is False")
        return draft
    k = integral(float(t["k"]), "k", where)
    theta = float(t["threshold"].reshape(-1)[0])
    if cls == "MatryoshkaBatchTopKSAE":
        draft = Draft("batchtopk", t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], k=k)
        draft.metadata["source_group_sizes"] = [int(v) for v in t["group_sizes"].tolist()]
    else:
        draft = Draft(
            "topk" if cls == "AutoEncoderTopK" else "batchtopk",
            t["encoder.weight"].T,
            t["encoder.bias"],
            t["decoder.weight"].T,
            t["b_dec"],
            k=k,
        )
    if draft.architecture == "batchtopk":
        draft.threshold = torch.full((draft.d_sae,), theta, dtype=torch.float64)
    else:
        draft.metadata["source_threshold"] = theta  # only for encode(use_threshold=True)
    return draft
