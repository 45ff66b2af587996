"""Kandinsky 2.2 pipelines: the real ones (hub ids or local folders, HF cache honoured) or
tiny random ones built from the same classes, for CPU demos and tests.

The prior maps a prompt (or an image) to an image embedding (1280-d for the real model;
the steering SAE lives in that space); the decoder turns an embedding into an image.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from precompute.hub_ids import KANDINSKY_DECODER as DECODER_ID
from precompute.hub_ids import KANDINSKY_PRIOR as PRIOR_ID

from .configs import PRECISIONS, KandinskyOptions

if TYPE_CHECKING:
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

TINY_DIM = 32
log = logging.getLogger(__name__)


def resolve_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The torch dtype of a precision name: auto is float16 on any CUDA device, else float32."""
    if precision == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be auto, float32, float16 or bfloat16; got {precision!r}")
    return getattr(torch, precision)


@dataclass
class KandinskyPipes:
    prior: KandinskyV22PriorPipeline
    decoder: KandinskyV22Pipeline
    tiny: bool
    """True for the random tiny components (images are noise-like patterns, said in the UI)."""

    @property
    def embed_dim(self) -> int:
        return int(self.prior.image_encoder.config.projection_dim)


def _model_folder(model: str) -> Path | None:
    """A local diffusers folder, or the HF-cache snapshot holding the model's model_index.json."""
    from huggingface_hub import try_to_load_from_cache

    if Path(model).is_dir():
        return Path(model)
    hit = try_to_load_from_cache(model, "model_index.json")
    return Path(hit).parent if isinstance(hit, str) else None


def missing_parts(model: str) -> list[str]:
    """What a diffusers model lacks on this machine (empty: complete, loadable offline):
    model_index.json, and for each component its folder, config and (for models) weights."""
    folder = _model_folder(model)
    if folder is None or not (folder / "model_index.json").is_file():
        return ["model_index.json"]
    missing = []
    for name, spec in json.loads((folder / "model_index.json").read_text()).items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        part = folder / name
        files = {p.name for p in part.iterdir() if p.exists()} if part.is_dir() else set()  # no dangling links
        if not any(f.endswith(".json") for f in files):
            missing.append(f"{name}/ (config)")
        elif "config.json" in files and not any(f.endswith((".safetensors", ".bin")) for f in files):
            missing.append(f"{name}/ (weights)")
    return missing


def kandinsky_available(prior: str = PRIOR_ID, decoder: str = DECODER_ID) -> bool:
    """Both models are complete local diffusers folders or complete in the HF cache (no network needed)."""
    return not missing_parts(prior) and not missing_parts(decoder)


def _ready(
    prior: KandinskyV22PriorPipeline,
    decoder: KandinskyV22Pipeline,
    device: str,
    tiny: bool,
    options: KandinskyOptions | None = None,
) -> KandinskyPipes:
    prior.to(device)
    prior.set_progress_bar_config(disable=True)
    decoder.to(device)
    decoder.set_progress_bar_config(disable=True)  # progress goes through the job's step callback
    pipes = KandinskyPipes(prior, decoder, tiny=tiny)
    apply_options(pipes, options or KandinskyOptions())
    return pipes


def apply_options(pipes: KandinskyPipes, options: KandinskyOptions) -> None:
    """Attention kernels and the optional compiled decoder (precision is chosen at load time)."""
    if options.attention not in ("sdpa", "eager"):
        raise ValueError(f"--attention must be sdpa or eager; got {options.attention!r}")
    if options.attention == "eager":  # diffusers' classic processors; the CLIP encoders' eager attention
        pipes.prior.prior.set_default_attn_processor()
        pipes.decoder.unet.set_default_attn_processor()
        for enc in (pipes.prior.text_encoder, pipes.prior.image_encoder):
            enc.set_attn_implementation("eager")
    if options.compile_decoder and not hasattr(pipes.decoder.unet, "_orig_mod"):  # not compiled twice
        unet = pipes.decoder.unet.to(memory_format=torch.channels_last)
        pipes.decoder.unet = torch.compile(unet)
        log.info("the decoder's UNet is compiled on its first call at each resolution")


def load_pipelines(
    prior: str = PRIOR_ID,
    decoder: str = DECODER_ID,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    options: KandinskyOptions | None = None,
) -> KandinskyPipes:
    """The real pipelines from hub ids (the HF cache, offline) or local diffusers folders, in
    `dtype` (default: `options.precision`, auto: float16 on CUDA, float32 on the CPU), with the
    options' attention kernels and compiled decoder. A ValueError names what is missing rather
    than reaching for the network."""
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

    options = options or KandinskyOptions()
    dtype = dtype or resolve_dtype(options.precision, device)

    for model in (prior, decoder):
        gaps = missing_parts(model)
        if gaps:
            raise ValueError(
                f"Kandinsky 2.2 model {model} is incomplete on this machine (missing: {', '.join(gaps)}); "
                "pass a complete local diffusers folder or download it into the Hugging Face cache"
            )
    try:
        # local_files_only: a hub id resolves through the HF cache exactly as diffusers does, never the network
        prior_pipe = KandinskyV22PriorPipeline.from_pretrained(prior, torch_dtype=dtype, local_files_only=True)
        decoder_pipe = KandinskyV22Pipeline.from_pretrained(decoder, torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"could not load Kandinsky 2.2 ({prior}, {decoder}): {exc}") from None
    return _ready(prior_pipe, decoder_pipe, device, tiny=False, options=options)


def pipelines_for(
    prior: str = PRIOR_ID,
    decoder: str = DECODER_ID,
    tiny: bool = False,
    device: str = "cpu",
    options: KandinskyOptions | None = None,
) -> KandinskyPipes:
    """The pipelines a command asked for: the tiny random ones (`--tiny-kandinsky`), or the real
    ones (`load_pipelines`) with the options' precision (auto: float16 on any CUDA device,
    float32 on the CPU), attention kernels and compiled decoder."""
    if tiny:
        return make_tiny_pipelines(device=device)
    return load_pipelines(prior, decoder, device=device, options=options)


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
    from diffusers import (
        DDIMScheduler,
        KandinskyV22Pipeline,
        KandinskyV22PriorPipeline,
        PriorTransformer,
        UNet2DConditionModel,
        UnCLIPScheduler,
        VQModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    d = TINY_DIM
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tiny_tokenizer(Path(tmp))
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=d,
            projection_dim=d,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
        )
    )
    torch.manual_seed(seed)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=d, num_layers=1)
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))  # else post-processing returns 0
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=d,
            image_size=32,
            projection_dim=d,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            patch_size=8,
        )
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, resample=3)
    prior_pipe = KandinskyV22PriorPipeline(
        prior=prior,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log",
            prediction_type="sample",
            num_train_timesteps=1000,
            clip_sample=True,
            clip_sample_range=10.0,
        ),
        image_processor=processor,
    )
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        in_channels=4,
        out_channels=8,
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        encoder_hid_dim=d,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=32,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    )
    torch.manual_seed(seed)
    movq = VQModel(
        block_out_channels=[32, 64],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        in_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        out_channels=3,
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        thresholding=False,
    )
    decoder_pipe = KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq)
    return _ready(prior_pipe, decoder_pipe, device, tiny=True)
