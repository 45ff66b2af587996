"""Kandinsky 2.2 pipelines: the real ones (hub ids or local folders, HF cache honoured) or
tiny random ones built from the same classes, for CPU demos and tests.

The prior maps a prompt (or an image) to an image embedding (1280-d for the real model;
the steering SAE lives in that space); the decoder turns an embedding into an image.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from precompute.hub_ids import KANDINSKY_DECODER as DECODER_ID
from precompute.hub_ids import KANDINSKY_PRIOR as PRIOR_ID
TINY_DIM = 32


@dataclass
class KandinskyPipes:
    prior: object  # diffusers.KandinskyV22PriorPipeline
    decoder: object  # diffusers.KandinskyV22Pipeline
    tiny: bool
    """True for the random tiny components (images are noise-like patterns, said in the UI)."""

    @property
    def embed_dim(self) -> int:
        return int(self.prior.image_encoder.config.projection_dim)


def kandinsky_available(prior: str = PRIOR_ID, decoder: str = DECODER_ID) -> bool:
    """Both models are local diffusers folders or already in the HF cache (no network needed)."""
    from huggingface_hub import try_to_load_from_cache

    def one(model: str) -> bool:
        return Path(model).is_dir() or isinstance(try_to_load_from_cache(model, "model_index.json"), str)

    return one(prior) and one(decoder)


def load_pipelines(prior: str = PRIOR_ID, decoder: str = DECODER_ID, device: str = "cpu",
                   dtype: torch.dtype = torch.float32) -> KandinskyPipes:
    """The real pipelines from hub ids (or the HF cache) or local diffusers folders."""
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

    try:
        prior_pipe = KandinskyV22PriorPipeline.from_pretrained(prior, torch_dtype=dtype)
        decoder_pipe = KandinskyV22Pipeline.from_pretrained(decoder, torch_dtype=dtype)
    except OSError as exc:
        raise ValueError(
            f"could not load Kandinsky 2.2 ({prior}, {decoder}): {exc}. Without network access, pass local "
            "diffusers folders or have them in the Hugging Face cache."
        ) from None
    prior_pipe.to(device)
    prior_pipe.set_progress_bar_config(disable=True)
    decoder_pipe.to(device)
    decoder_pipe.set_progress_bar_config(leave=False)  # tqdm: the UI's progress bar follows it
    return KandinskyPipes(prior_pipe, decoder_pipe, tiny=False)


def _tiny_tokenizer(folder: Path):
    """A CLIPTokenizer over single byte-level characters (no merges): built locally, no hub."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 2, "!": 1}
    for c in chars:
        for tok in (c, c + "</w>"):
            vocab.setdefault(tok, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    # paths, positionally: transformers 4 (vocab_file, merges_file) and 5 (vocab, merges) both take them
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!", model_max_length=77)


def make_tiny_pipelines(seed: int = 0, device: str = "cpu") -> KandinskyPipes:
    """Prior + decoder with random weights and the real classes (diffusers' own test recipe):
    32-d embeddings, a 2-block UNet and a small MoVQ; 64 px images in seconds on a CPU."""
    from diffusers import (DDIMScheduler, KandinskyV22Pipeline, KandinskyV22PriorPipeline, PriorTransformer,
                           UNet2DConditionModel, UnCLIPScheduler, VQModel)
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    d = TINY_DIM
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tiny_tokenizer(Path(tmp))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=d, projection_dim=d, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer)))
    torch.manual_seed(seed)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=d, num_layers=1)
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))  # else post-processing returns 0
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=d, image_size=32, projection_dim=d, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, patch_size=8))
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, resample=3)
    prior_pipe = KandinskyV22PriorPipeline(
        prior=prior, image_encoder=image_encoder, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
                                  clip_sample=True, clip_sample_range=10.0),
        image_processor=processor)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        encoder_hid_dim=d, encoder_hid_dim_type="image_proj", cross_attention_dim=32, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type=None)
    torch.manual_seed(seed)
    movq = VQModel(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                   in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
                   num_vq_embeddings=12, out_channels=3, up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
                   vq_embed_dim=4)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                              thresholding=False)
    decoder_pipe = KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq)
    prior_pipe.to(device)
    prior_pipe.set_progress_bar_config(disable=True)
    decoder_pipe.to(device)
    decoder_pipe.set_progress_bar_config(leave=False)  # tqdm: the UI's progress bar follows it
    return KandinskyPipes(prior_pipe, decoder_pipe, tiny=True)
