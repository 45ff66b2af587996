"""Image captioning for `clipsae interpret`: transformers' BLIP, real or tiny.

    cap = load_captioner("Salesforce/blip-image-captioning-base")   # HF cache only, no download
    cap = load_captioner("path/to/blip_folder")                      # saved with save_pretrained
    cap = load_captioner("tiny")                                     # random weights, said plainly
    cap.caption([image, image2])                                     # -> ["a dog on a beach", ...]

The real model is loaded from a local folder or from the Hugging Face cache (nothing is
downloaded here: `huggingface-cli download Salesforce/blip-image-captioning-base` fetches
it once). `tiny` builds a BLIP with random weights from transformers' own config classes
and a locally built tokenizer over the bundled visual-concept words, saves it with
`save_pretrained` and loads it back through the same `from_pretrained` path real weights
use: a demo and test of the mechanics, whose captions are random words.

Not handled here: which images to caption and what the captions mean (precompute/interpret.py).
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from sae_core.device import is_cuda, resolve_device

from .hub_ids import BLIP_CAPTIONER

log = logging.getLogger(__name__)

TINY = "tiny"
TINY_DIM = 32
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]  # BLIP's BERT specials + its decoder BOS
NO_CAPTIONER = (
    "no BLIP captioner available: {spec!r} is neither a local folder nor in the Hugging Face cache. "
    "Pass --captioner DIR (a BlipForConditionalGeneration folder saved with save_pretrained), fetch the "
    f"default once with `huggingface-cli download {BLIP_CAPTIONER}`, or use --captioner tiny "
    "(random weights: a demo of the mechanics, its captions are random words)"
)


@dataclass
class Captioner:
    """A loaded BLIP captioning model and its processor."""

    model: Any  # transformers.BlipForConditionalGeneration
    processor: Any  # transformers.BlipProcessor
    name: str
    """What was asked for: `tiny`, a folder or a hub id."""
    tiny: bool
    """Random weights (captions are random words; said wherever they are shown)."""
    device: torch.device
    max_new_tokens: int = 30

    @property
    def description(self) -> str:
        if self.tiny:
            return "a tiny BLIP with RANDOM weights (captions are random words: a demo of the mechanics)"
        return f"BLIP {self.name}"

    @torch.inference_mode()
    def caption(self, images: list[Image.Image]) -> list[str]:
        """One caption per image (greedy decoding), batched as given."""
        if not images:
            return []
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, dtype=self.model.dtype)
        threads = torch.get_num_threads()
        if self.tiny:  # 32-wide matrices gain nothing from threads, and lose much to them on a busy CPU
            torch.set_num_threads(1)
        try:
            ids = self.model.generate(
                pixel_values=pixels, max_new_tokens=self.max_new_tokens, num_beams=1, do_sample=False
            )
        finally:
            torch.set_num_threads(threads)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


def _tiny_words() -> list[str]:
    from .labels import read_vocab

    words = {w for concept in read_vocab() for w in re.findall(r"[a-z]+", concept.lower()) if len(w) > 1}
    return sorted(words)


def make_tiny_captioner(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random BLIP (model + processor) to `folder` with save_pretrained; returns it.

    Real classes (BlipConfig, BlipForConditionalGeneration, BlipProcessor with a
    BertTokenizer and a BlipImageProcessor), 32-d, 2 layers, 32 px images; the vocabulary is
    the words of the bundled visual concepts, so captions are readable (random) words."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(_SPECIAL + _tiny_words()) + "\n")
        tokenizer = BertTokenizer(str(vocab), bos_token="[DEC]")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("[PAD]", "[SEP]", "[DEC]")}
    d = TINY_DIM
    # initializer_range 0.2 (not BLIP's 0.02): random captions that differ from image to image
    cfg = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=d,
            encoder_hidden_size=d,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            bos_token_id=ids["[DEC]"],
            eos_token_id=ids["[SEP]"],
            sep_token_id=ids["[SEP]"],
            pad_token_id=ids["[PAD]"],
            initializer_range=0.2,
        ),
        vision_config=dict(
            hidden_size=d,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            initializer_range=0.2,
        ),
        projection_dim=d,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(cfg).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def captioner_source(spec: str) -> str | None:
    """Where `spec` loads from without a network: `tiny`, a local folder, or a hub id found in
    the Hugging Face cache; None when it is not available."""
    if spec == TINY:
        return TINY
    if Path(spec).is_dir():
        return str(Path(spec))
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(spec, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub library cannot parse is simply not cached
        return None
    return spec if isinstance(hit, str) else None


def load_captioner(
    spec: str = BLIP_CAPTIONER, device: str | torch.device = "auto", seed: int = 0, max_new_tokens: int = 30
) -> Captioner:
    """A ready captioner (eval mode, on `device`; float16 on CUDA), or a ValueError naming
    `--captioner` when `spec` is not available offline."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    source = captioner_source(spec)
    if source is None:
        raise ValueError(NO_CAPTIONER.format(spec=spec))
    dev = resolve_device(device)
    dtype = torch.float16 if is_cuda(dev) else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_captioner(Path(tmp) / "blip", seed) if source == TINY else source
        try:  # local_files_only: a folder, or the HF cache; never a download
            model = BlipForConditionalGeneration.from_pretrained(folder, dtype=dtype, local_files_only=True)
            processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"--captioner {spec}: could not load a BLIP captioner from {folder}: {str(exc).splitlines()[0]}"
            ) from None
    model = model.to(dev).eval()
    log.info("captioner: %s on %s", "tiny random BLIP" if source == TINY else spec, dev)
    return Captioner(model, processor, spec, tiny=source == TINY, device=dev, max_new_tokens=max_new_tokens)
