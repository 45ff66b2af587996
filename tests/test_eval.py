"""Evaluation: classification metrics vs scikit-learn, CIFAR binary / ImageFolder readers,
the splice, zero-shot + CE recovered with perfect and zero SAEs, the probe, heat maps, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.classification import ce_recovered, classification_report, cross_entropy_sum
from evaluation.common import ModelChoice, NamedSAE, load_clip
from evaluation.datasets import open_dataset
from evaluation.heatmap import compare, saliency, scale_latents
from evaluation.probe import probe
from evaluation.prompts import CIFAR10_CLASSES, CIFAR100_CLASSES, templates_for
from evaluation.splice import edit, reconstruct, zero_ablate
from evaluation.zeroshot import zeroshot
from app.cli import main as cli_main
from sae_core.config import SAEConfig
from sae_core.io import save_sae
from sae_core.sae import SparseAutoencoder
from helpers import TINY_CLIP, write_tiny_clip_config

EMBED = TINY_CLIP["embed_dim"]
WIDTH = TINY_CLIP["vision_cfg"]["width"]


# ---------------------------------------------------------------- builders
def _meta(config: str, hook: str, tokens: str = "all") -> dict:
    return {
        "model_name": "clipsae-tiny-vit",
        "model_config_path": config,
        "pretrained": "none",
        "seed": 0,
        "hook_name": hook,
        "tokens": tokens,
    }


def identity_sae(d: int, meta: dict) -> SparseAutoencoder:
    """relu SAE with W_enc = [I, −I], W_dec = [I; −I]: relu(x) − relu(−x) = x exactly."""
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d, metadata=meta))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def zero_sae(d: int, meta: dict) -> SparseAutoencoder:
    sae = identity_sae(d, meta)
    with torch.no_grad():
        sae.W_dec.zero_()
    return sae


def random_sae(d: int, meta: dict, d_sae: int = 48) -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=d_sae, metadata=meta), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    return sae.eval()


def colour_images(n_per_class: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """32×32 noisy images whose mean colour depends on the class."""
    rng = np.random.default_rng(seed)
    palette = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 230], [200, 200, 30]])[:n_classes]
    labels = np.repeat(np.arange(n_classes), n_per_class)
    pixels = np.clip(palette[labels][:, None, None, :] + rng.normal(0, 25, (len(labels), 32, 32, 3)), 0, 255)
    return pixels.astype(np.uint8), labels


def write_cifar10(folder, labels: np.ndarray, pixels: np.ndarray, name: str = "test_batch.bin") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    planes = pixels.transpose(0, 3, 1, 2).reshape(len(labels), -1)
    np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1).tofile(folder / name)


def write_imagefolder(root, split: str, pixels: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    for i, (px, y) in enumerate(zip(pixels, labels)):
        d = root / split / names[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(px).save(d / f"{i:03d}.png")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_eval")
    return write_tiny_clip_config(folder)


def _clip(config: str, sae: SparseAutoencoder, name: str = "sae"):
    return load_clip([NamedSAE(name, None, sae)], ModelChoice(device="cpu"))  # type: ignore[arg-type]


# ---------------------------------------------------------------- metrics
def test_classification_report_matches_sklearn():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 5, 300))  # class 5 is never predicted
    ours = classification_report(y_true, y_pred, 7)  # class 6 never occurs at all
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(7)), average="macro", zero_division=0
    )
    assert ours["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((p, r, f), abs=1e-12)


def test_cross_entropy_and_ce_recovered():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 30, (50, 7))
    labels = rng.integers(0, 7, 50)
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction="sum")
    assert cross_entropy_sum(logits, labels) == pytest.approx(float(ref), rel=1e-12)
    assert ce_recovered(1.0, 1.0, 3.0) == 1.0 and ce_recovered(1.0, 3.0, 3.0) == 0.0
    assert ce_recovered(1.0, 2.5, 3.0) == pytest.approx(0.25)


# ---------------------------------------------------------------- datasets
def test_cifar10_binary_round_trip(tmp_path):
    pixels, labels = colour_images(4, 3, seed=0)
    root = tmp_path / "cifar-10-batches-bin"
    write_cifar10(root, labels, pixels)
    for i in range(1, 6):
        write_cifar10(root, labels[::-1].copy(), pixels[::-1].copy(), f"data_batch_{i}.bin")
    (root / "batches.meta.txt").write_text("\n".join(["air_plane", *CIFAR10_CLASSES[1:]]) + "\n\n")
    test = open_dataset(tmp_path)  # the parent folder is found too
    assert (
        test.kind == "cifar10"
        and test.classnames[0] == "air plane"
        and test.classnames[1:] == list(CIFAR10_CLASSES[1:])
    )
    assert np.array_equal(test.labels, labels) and np.array_equal(test.pixels, pixels)
    assert np.array_equal(np.asarray(test.image(5)), pixels[5])
    train = open_dataset(root, "train")
    assert len(train) == 5 * len(labels) and np.array_equal(train.pixels[0], pixels[-1])
    sub = test.subset(5, seed=1)
    assert len(sub) == 5 and all(any(np.array_equal(p, q) for q in pixels) for p in sub.pixels)


def test_cifar100_binary_uses_fine_labels(tmp_path):
    pixels, fine = colour_images(3, 4, seed=1)
    coarse = (fine + 7).astype(np.uint8)
    planes = pixels.transpose(0, 3, 1, 2).reshape(len(fine), -1)
    np.concatenate([coarse[:, None], fine[:, None].astype(np.uint8), planes], axis=1).tofile(tmp_path / "test.bin")
    data = open_dataset(tmp_path)
    assert data.kind == "cifar100" and data.classnames == list(CIFAR100_CLASSES) and len(CIFAR100_CLASSES) == 100
    assert np.array_equal(data.labels, fine) and np.array_equal(data.pixels, pixels)
    assert len(templates_for("cifar100")) == 18 and all(t.count("{}") == 1 for t in templates_for("x", "openai"))


def test_wrong_layouts_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected one of these layouts"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="(?s)no class sub-folders.*CIFAR-10 binary"):
        open_dataset(tmp_path / "empty")
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    (py / "data_batch_1").write_bytes(b"\x80\x04not unpickled")
    with pytest.raises(ValueError, match="never unpickled"):
        open_dataset(py)
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "test_batch.bin").write_bytes(bytes(3073 + 10))
    with pytest.raises(ValueError, match="not a whole number"):
        open_dataset(trunc)
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin"):
        open_dataset(trunc, "train")
    flat = tmp_path / "flat"
    (flat / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(flat / "cat" / "a.png")
    assert len(open_dataset(flat, None)) == 1
    with pytest.raises(FileNotFoundError, match="needs train/ and test/"):
        open_dataset(flat, "train")


# ---------------------------------------------------------------- splice
def test_splice_changes_only_the_hooked_layer(tiny):
    clip = _clip(tiny, identity_sae(WIDTH, _meta(tiny, "blocks.1.resid_post", "cls")))
    ins: dict[int, torch.Tensor] = {}  # what each block reads (the previous block's output, after any splice)
    blocks = clip.model.visual.transformer.resblocks
    handles = [
        b.register_forward_pre_hook(lambda m, i, k=k: ins.__setitem__(k, i[0].detach().clone()))
        for k, b in enumerate(blocks)
    ]
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        e0 = clip.encode(pixels)
        plain = dict(ins)
        e1 = clip.encode(pixels, lambda a: a + 1.0)
        spliced = dict(ins)
        e2 = clip.encode(pixels, edit(identity_sae(WIDTH, {}), []))
    for h in handles:
        h.remove()
    assert torch.equal(spliced[1], plain[1])  # before the hooked block: untouched
    assert torch.equal(spliced[2][:, 0], plain[2][:, 0] + 1.0)  # its CLS output: replaced
    assert torch.equal(spliced[2][:, 1:], plain[2][:, 1:])  # its other tokens: untouched
    assert not torch.equal(e1, e0)  # the forward continued from the replacement
    assert torch.equal(e2, e0)  # an edit splice with no edits is the identity, bit for bit
    with torch.no_grad():
        assert torch.equal(clip.encode(pixels), e0)  # the hook is gone afterwards


# ---------------------------------------------------------------- zero-shot
@pytest.mark.parametrize("hook,tokens,d", [("embed", "cls", EMBED), ("blocks.1.resid_post", "all", WIDTH)])
def test_zeroshot_perfect_and_zero_saes(tiny, tmp_path, hook, tokens, d):
    import open_clip

    pixels, labels = colour_images(6, 3, seed=2)
    write_cifar10(tmp_path / "c10", labels, pixels)
    data = open_dataset(tmp_path / "c10")
    meta = _meta(tiny, hook, tokens)
    saes = [NamedSAE("perfect", None, identity_sae(d, meta)), NamedSAE("zero", None, zero_sae(d, meta))]  # type: ignore[arg-type]
    clip = load_clip(saes, ModelChoice(device="cpu"))
    templates = ["a photo of a {}.", "a blurry photo of the {}."]
    rows, failures = zeroshot(clip, saes, data, data.classnames, templates, batch_size=7)
    perfect, zero = rows
    assert failures == [] and perfect["n_images"] == 18
    # an independent baseline: the model's own encode_image / encode_text, numpy argmax, sklearn accuracy
    from sklearn.metrics import accuracy_score

    model = clip.model
    tok = open_clip.get_tokenizer("clipsae-tiny-vit")
    with torch.no_grad():
        img = torch.stack([clip.preprocess(Image.fromarray(p)) for p in pixels])
        ie = torch.nn.functional.normalize(model.encode_image(img), dim=-1)
        cls = []
        for name in data.classnames:
            te = torch.nn.functional.normalize(model.encode_text(tok([t.format(name) for t in templates])), dim=-1)
            cls.append(torch.nn.functional.normalize(te.mean(0), dim=0))
        logits = model.logit_scale.exp() * ie @ torch.stack(cls).T
    assert perfect["acc_clip"] == pytest.approx(accuracy_score(labels, logits.argmax(1).numpy()))
    ce_ref = float(torch.nn.functional.cross_entropy(logits.double(), torch.from_numpy(labels)))
    assert perfect["ce_clip"] == pytest.approx(ce_ref, rel=1e-5)
    assert perfect["acc_sae"] == perfect["acc_clip"] and perfect["ce_sae"] == perfect["ce_clip"]
    assert perfect["ce_recovered"] == 1.0 and perfect["embed_cos"] == pytest.approx(1.0)
    assert perfect["hook_ev"] == pytest.approx(1.0) and perfect["ce_zero"] != perfect["ce_clip"]
    assert zero["ce_sae"] == zero["ce_zero"] and zero["ce_recovered"] == 0.0
    if hook == "embed":  # a zero embedding gives uniform logits
        assert zero["ce_zero"] == pytest.approx(np.log(10), rel=1e-9)


# ---------------------------------------------------------------- probe
def test_probe_on_imagefolder(tiny, tmp_path):
    names = ["red", "green", "blue"]
    px, y = colour_images(12, 3, seed=3)
    write_imagefolder(tmp_path / "ds", "train", px, y, names)
    px, y = colour_images(6, 3, seed=4)
    write_imagefolder(tmp_path / "ds", "val", px, y, names)
    train, test = open_dataset(tmp_path / "ds", "train"), open_dataset(tmp_path / "ds", "test")
    assert train.classnames == sorted(names) and len(test) == 18  # class = folder, sorted (ImageFolder)
    meta = _meta(tiny, "embed")
    saes = [NamedSAE("perfect", None, identity_sae(EMBED, meta)), NamedSAE("rand", None, random_sae(EMBED, meta))]  # type: ignore[arg-type]
    clip = load_clip(saes, ModelChoice(device="cpu"))
    rows, failures = probe(clip, saes, train, test, batch_size=8)
    assert failures == [] and [r["model"] for r in rows] == [
        "CLIP",
        "CLIP + SAE",
        "SAE latents",
        "CLIP + SAE",
        "SAE latents",
    ]
    base, perfect = rows[0], rows[1]
    for key in ("accuracy", "precision", "recall", "f1"):
        assert perfect[key] == base[key]  # identical features -> identical probe
        assert all(0 <= r[key] <= 1 for r in rows)
    assert base["accuracy"] >= 0.9  # colour classes are linearly separable even through random CLIP


# ---------------------------------------------------------------- heat maps
def test_heatmaps_shape_identity_and_ablation(tiny):
    sae = random_sae(EMBED, _meta(tiny, "embed"))
    clip = _clip(tiny, sae)
    img = Image.fromarray(colour_images(1, 1, seed=5)[0][0])
    pixels = clip.preprocess(img)[None]
    text = clip.text_embedding("a photo of a red square")
    heat, sim = saliency(clip, pixels, text)
    assert heat.shape == clip.grid == (4, 4) and np.isfinite(heat).all() and heat.max() > 0
    with torch.no_grad():
        f = sae.encode(clip.encode(pixels))[0]
    top = int(f.argmax())
    assert f[top] > 0
    same = compare(clip, sae, pixels, text, [])
    assert np.array_equal(same.base, same.edited) and same.sim_base == same.sim_edited == sim
    removed = compare(clip, sae, pixels, text, scale_latents([top], 0.0))
    assert np.isfinite(removed.edited).all() and removed.edited.shape == (4, 4)
    assert not np.allclose(removed.edited, removed.base, rtol=1e-3, atol=1e-7)
    assert removed.sim_edited != removed.sim_base
    norm, _ = saliency(clip, pixels, text, method="grad_norm")
    assert norm.shape == (4, 4) and (norm >= 0).all()


def test_heatmap_on_a_block_hook_changes_with_a_latent(tiny):
    sae = random_sae(WIDTH, _meta(tiny, "blocks.1.resid_post", "all"), d_sae=64)
    clip = _clip(tiny, sae)
    pixels = clip.preprocess(Image.fromarray(colour_images(1, 2, seed=6)[0][1]))[None]
    text = clip.text_embedding("green")
    from evaluation.heatmap import top_latents

    top = top_latents(clip, sae, pixels, 2)
    res = compare(clip, sae, pixels, text, scale_latents(top, 0.0))
    assert res.base.shape == (4, 4) and not np.allclose(res.base, res.edited, rtol=1e-3, atol=1e-7)


# ---------------------------------------------------------------- CLI
def test_cli_recon_zeroshot_probe_heatmap(tiny, tmp_path, small_npy, capsys):
    # recon: a λ sweep of two SAEs on a plain matrix
    for lam, seed in ((1e-3, 0), (1e-2, 1)):
        s = SparseAutoencoder(
            SAEConfig(d_in=16, d_sae=32, metadata={"l1_coefficient": lam}),
            generator=torch.Generator().manual_seed(seed),
        )
        save_sae(s, tmp_path / "sweep" / f"l1_{lam}")
    out = tmp_path / "out"
    assert cli_main(["eval", "recon", "--acts", small_npy, "--sae", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    with open(out / "recon.csv") as fh:
        rec = list(csv.DictReader(fh))
    assert [r["sparsity"] for r in rec] == ["λ=0.001", "λ=0.01"] and float(rec[0]["l0"]) > 0
    assert (out / "recon_tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| SAE | Arch | λ / k |" in capsys.readouterr().out

    # zero-shot on an ImageFolder with one corrupt file (skipped and listed)
    names = ["red", "green", "blue"]
    px, y = colour_images(4, 3, seed=7)
    write_imagefolder(tmp_path / "ds", "train", px, y, names)
    write_imagefolder(tmp_path / "ds", "test", px, y, names)
    (tmp_path / "ds" / "test" / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    save_sae(identity_sae(EMBED, _meta(tiny, "embed")), tmp_path / "perfect")
    args = ["--sae", str(tmp_path / "perfect"), "--out", str(out), "--device", "cpu", "--batch-size", "5"]
    assert cli_main(["eval", "zeroshot", "--dataset", str(tmp_path / "ds"), *args]) == 0
    row = json.loads((out / "zeroshot.json").read_text())[0]
    assert row["n_images"] == 12 and row["acc_sae"] == row["acc_clip"] and row["ce_recovered"] == 1.0
    assert "broken.jpg" in (out / "zeroshot_skipped.txt").read_text()
    assert (out / "zeroshot_accuracy.png").exists() and "Zero abl. CE" in (out / "zeroshot.md").read_text()

    assert cli_main(["eval", "probe", "--dataset", str(tmp_path / "ds"), *args]) == 0
    rows = json.loads((out / "probe.json").read_text())
    assert [r["model"] for r in rows] == ["CLIP", "CLIP + SAE", "SAE latents"]
    assert rows[0]["accuracy"] == rows[1]["accuracy"] and (out / "probe.csv").exists()

    img = tmp_path / "ds" / "test" / "green" / "004.png"
    assert cli_main(["eval", "heatmap", "--image", str(img), "--text", "green", "--latent", "3", *args]) == 0
    for key in ("base", "edited", "difference"):
        assert Image.open(out / f"004_heat_{key}.png").size == (336, 336)
    assert cli_main(["eval", "zeroshot", "--dataset", str(tmp_path / "nowhere"), *args]) == 2
    assert "expected one of these layouts" in capsys.readouterr().err


def test_embed_shortcut_equals_the_spliced_forward(tiny):
    sae = random_sae(EMBED, _meta(tiny, "embed"))
    clip = _clip(tiny, sae)
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = clip.encode_variants(pixels, [None, zero_ablate, reconstruct(sae)])
        slow = [clip.encode(pixels), clip.encode(pixels, zero_ablate), clip.encode(pixels, reconstruct(sae))]
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert not torch.allclose(fast[0], fast[2])
