"""ViT-Prisma SAEs. Prisma's SAE code is not installable (the vit-prisma wheel has none), so
the files are written the way its source writes them (`VisionModelSAERunnerConfig.save_config`:
the dataclass as JSON with dtype/device wrapped as {"__type__": ...}; `SparseAutoencoder.
save_model`: torch.save({"cfg": <config object>, "state_dict": ...})), and the expected codes
come from the live SAELens classes, whose forward Prisma's shares line for line (layer_norm
with the unbiased std + 1e-5, TopK = relu on the top k, the gated encoder)."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import asdict, dataclass, field

import pytest
import torch

from interop_helpers import assert_close, assert_codes_close, clear_rows, inputs, randomize
from sae_core.interop import Refused, convert
from sae_core.io import load_sae

pytest.importorskip("sae_lens")
from sae_lens.saes import GatedSAE, GatedSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig  # noqa: E402

D, S, K = 64, 256, 12


@dataclass
class VisionModelSAERunnerConfig:
    """The fields of Prisma's config that its SAE reads, plus some it does not (as saved)."""

    model_name: str = "open-clip:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"
    hook_point_layer: int = 9
    layer_subtype: str = "hook_resid_post"
    hook_point_head_index: int | None = None
    d_in: int = D
    d_sae: int = S
    expansion_factor: int = S // D
    activation_fn_str: str = "relu"
    activation_fn_kwargs: dict = field(default_factory=dict)
    architecture: str = "standard"
    normalize_activations: str = "layer_norm"
    cls_token_only: bool = False
    use_patches_only: bool = False
    is_transcoder: bool = False
    l1_coefficient: float = 2e-4
    initialization_method: str = "encoder_transpose_decoder"
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def save_config_json(cfg: VisionModelSAERunnerConfig, path) -> None:
    """As Prisma's `save_config`: asdict, with torch types wrapped."""

    def plain(v):
        if isinstance(v, torch.device):
            return {"__type__": "torch.device", "value": str(v)}
        if isinstance(v, torch.dtype):
            return {"__type__": "torch.dtype", "value": repr(v)}
        return v

    path.write_text(json.dumps({k: plain(v) for k, v in asdict(cfg).items()}, indent=4))


def save_checkpoint(cfg: VisionModelSAERunnerConfig, state: dict, path) -> None:
    """As Prisma's `save_model`: the config object pickled beside the state dict."""
    module = types.ModuleType("vit_prisma.sae.config")
    cls = type("VisionModelSAERunnerConfig", (), {"__module__": "vit_prisma.sae.config"})
    module.VisionModelSAERunnerConfig = cls
    obj = cls.__new__(cls)
    obj.__dict__.update({**asdict(cfg), "hook_point": f"blocks.{cfg.hook_point_layer}.{cfg.layer_subtype}"})
    saved = {name: sys.modules.get(name) for name in ("vit_prisma", "vit_prisma.sae", "vit_prisma.sae.config")}
    sys.modules.update(
        {
            "vit_prisma": types.ModuleType("vit_prisma"),
            "vit_prisma.sae": types.ModuleType("vit_prisma.sae"),
            "vit_prisma.sae.config": module,
        }
    )
    try:
        torch.save({"cfg": obj, "state_dict": state}, path)
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def reference(cfg: VisionModelSAERunnerConfig, seed: int):
    """A SAELens SAE with Prisma's forward for this config, random weights."""
    common = {"d_in": D, "d_sae": S, "normalize_activations": cfg.normalize_activations}
    if cfg.architecture == "gated":
        sae = GatedSAE(GatedSAEConfig(**common))
    elif cfg.activation_fn_str == "topk":
        sae = TopKSAE(TopKSAEConfig(k=cfg.activation_fn_kwargs["k"], **common))
    else:
        sae = StandardSAE(StandardSAEConfig(**common))
    randomize(sae, seed, D)
    return sae.eval()


def prisma_state(sae) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    if "b_gate" in state:  # Prisma's gated SAE also carries an unused b_enc
        state["b_enc"] = torch.randn(S)
    return state


CASES = [
    VisionModelSAERunnerConfig(),
    VisionModelSAERunnerConfig(activation_fn_str="topk", activation_fn_kwargs={"k": K}, cls_token_only=True),
    VisionModelSAERunnerConfig(normalize_activations="constant_norm_rescale", layer_subtype="hook_mlp_out"),
    VisionModelSAERunnerConfig(architecture="gated", normalize_activations="none", use_patches_only=True),
]


@pytest.mark.parametrize("form", ["hf_folder", "checkpoint"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_prisma_sae_imports_exactly(tmp_path, case, form):
    cfg = CASES[case]
    ref = reference(cfg, seed=case)
    if form == "hf_folder":
        (tmp_path / "p").mkdir()
        save_config_json(cfg, tmp_path / "p/config.json")
        torch.save(prisma_state(ref), tmp_path / "p/weights.pt")
        src = tmp_path / "p"
    else:
        src = tmp_path / "n_images_2600058.pt"
        save_checkpoint(cfg, prisma_state(ref), src)
    layout, _ = convert(src, tmp_path / "ours")
    assert layout == "vit-prisma"
    ours = load_sae(tmp_path / "ours")
    meta = ours.cfg.metadata
    assert meta["hook_name"] == f"blocks.9.{cfg.layer_subtype.removeprefix('hook_')}"
    assert meta["tokens"] == ("cls" if cfg.cls_token_only else "spatial" if cfg.use_patches_only else "all")
    x = inputs(D, seed=30 + case)
    with torch.no_grad():
        sae_in = ref.process_sae_in(x)
        if cfg.architecture == "gated":
            pre, theta, k = sae_in @ ref.W_enc + ref.b_gate, torch.zeros(S), None
        else:
            pre, theta = sae_in @ ref.W_enc + ref.b_enc, None
            k = K if cfg.activation_fn_str == "topk" else None
        assert_codes_close(ours.encode(x), ref.encode(x), pre=pre, theta=theta, k=k)
        assert_close(ours(x).x_hat_bd, ref(x), rows=clear_rows(pre, theta=theta, k=k))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"is_transcoder": True}, "is_transcoder=true"),
        ({"hook_point_head_index": 3}, "hook_point_head_index=3"),
        ({"activation_fn_str": "tanh-relu"}, "activation_fn_str='tanh-relu'"),
        ({"architecture": "gated", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}}, "gated.*topk"),
        ({"normalize_activations": "expected_average_only_in"}, "normalize_activations='expected_average_only_in'"),
    ],
)
def test_prisma_fields_we_cannot_honour_are_refused(tmp_path, change, message):
    cfg = VisionModelSAERunnerConfig(**change)
    (tmp_path / "p").mkdir()
    save_config_json(cfg, tmp_path / "p/config.json")
    ref = reference(VisionModelSAERunnerConfig(architecture=cfg.architecture), seed=1)
    torch.save(prisma_state(ref), tmp_path / "p/weights.pt")
    with pytest.raises(Refused, match=message):
        convert(tmp_path / "p", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


def test_a_jumprelu_ae_renamed_weights_pt_is_not_taken_for_relu(tmp_path):
    """dictionary-learning's JumpReLU state dict under Prisma's file names: its threshold is refused."""
    (tmp_path / "p").mkdir()
    save_config_json(VisionModelSAERunnerConfig(), tmp_path / "p/config.json")
    torch.save(
        {
            "W_enc": torch.randn(D, S),
            "b_enc": torch.zeros(S),
            "W_dec": torch.randn(S, D),
            "b_dec": torch.zeros(D),
            "threshold": torch.full((S,), 0.1),
        },
        tmp_path / "p/weights.pt",
    )
    with pytest.raises(Refused, match="unknown tensor.*threshold"):
        convert(tmp_path / "p", tmp_path / "ours")


@pytest.mark.parametrize("form", ["hf_folder", "checkpoint"])
def test_a_truncated_prisma_file_says_it_is_truncated(tmp_path, form):
    """A partial copy or download loses the zip directory torch.save writes at the end."""
    cfg = VisionModelSAERunnerConfig()
    if form == "hf_folder":
        (tmp_path / "p").mkdir()
        save_config_json(cfg, tmp_path / "p/config.json")
        path = src = tmp_path / "p/weights.pt"
        torch.save(prisma_state(reference(cfg, seed=3)), path)
        src = tmp_path / "p"
    else:
        path = src = tmp_path / "n_images_100.pt"
        save_checkpoint(cfg, prisma_state(reference(cfg, seed=3)), path)
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 300):
        path.write_bytes(data[:cut])
        with pytest.raises(Refused, match=rf"{path.name} is truncated or damaged: .*zip archive.* {cut:,} bytes"):
            convert(src, tmp_path / "ours")
    path.write_bytes(b"")
    with pytest.raises(Refused, match="is empty"):
        convert(src, tmp_path / "ours")
    assert not (tmp_path / "ours").exists()
