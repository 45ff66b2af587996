"""The app stage's configs: one dataclass per command, whose fields are its flags
(`sae_core.cliargs`); `clipsae serve|demo|up|icons|collage --help` reads only this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from precompute.hub_ids import KANDINSKY_DECODER, KANDINSKY_PRIOR
from precompute.selection import parse_latents
from sae_core.cliargs import POSITIONAL

DEFAULT_HOST = "127.0.0.1"
"""Servers bind this machine only unless told (`--host`)."""
DEFAULT_PORT = 7860
"""Gradio's usual port."""


@dataclass(frozen=True)
class ServeConfig:
    """`clipsae serve`: which atlases, where to listen, which Kandinsky."""

    atlas: str
    """An atlas folder (clipsae atlas)."""
    steer_atlas: str | None = None
    """An atlas of a Kandinsky-prior SAE (enables the Steer tab)."""
    host: str = DEFAULT_HOST
    """Interface to bind (default: this machine only)."""
    port: int = DEFAULT_PORT
    """Port to listen on."""
    prior: str = KANDINSKY_PRIOR
    """Kandinsky 2.2 prior: hub id (from the HF cache) or local diffusers folder."""
    decoder: str = KANDINSKY_DECODER
    """Kandinsky 2.2 decoder: hub id (from the HF cache) or local diffusers folder."""
    tiny_kandinsky: bool = False
    """Tiny random Kandinsky components (CPU demo of the mechanics)."""
    share: bool = False
    """Also open a public Gradio share link (off by default)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""
    images_root: str | None = None
    """Folder the atlases' image paths are relative to (default: as recorded in each atlas)."""
    auth_file: str | None = None
    """A file of users and salted password hashes (`clipsae passwd FILE USER`): every page, API
    call and file needs a login (Gradio's own). Without it, no login (anyone who reaches the port)."""


@dataclass(frozen=True)
class DemoConfig:
    """`clipsae demo`: build (once) and serve the embedded demo."""

    cache_dir: str = "demo_cache"
    """Where the demo is built and cached."""
    rebuild: bool = False
    """Delete the cached demo and build it again."""
    serve: bool = True
    """Serve the app after building (--no-serve: build and report only)."""
    host: str = DEFAULT_HOST
    """Interface to bind (default: this machine only)."""
    port: int = DEFAULT_PORT
    """Port to listen on."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""
    auth_file: str | None = None
    """A file of users and salted password hashes (`clipsae passwd FILE USER`): every page, API
    call and file needs a login (Gradio's own). Without it, no login (anyone who reaches the port)."""


@dataclass(frozen=True)
class UpConfig:
    """`clipsae up`: the container's command."""

    data: str = "/data"
    """Folder holding atlas/ (and optionally katlas/ and images/)."""
    cache_dir: str = "demo_cache"
    """Where the demo is built when no atlas is mounted."""
    host: str = DEFAULT_HOST
    """Interface to bind (default: this machine only)."""
    port: int = DEFAULT_PORT
    """Port to listen on."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""
    images_root: str | None = None
    """Folder the atlases' image paths are relative to (default: DATA/images when present, else as recorded)."""
    auth_file: str | None = None
    """A file of users and salted password hashes (`clipsae passwd FILE USER`): every page, API
    call and file needs a login (Gradio's own). Without it, no login (anyone who reaches the port)."""


@dataclass(frozen=True)
class PasswdConfig:
    """`clipsae passwd FILE USER`: add a user to an auth file (or change their password)."""

    auth_file: str = field(metadata=POSITIONAL)
    """The auth file (created, readable by its owner only, if absent)."""
    user: str = field(metadata=POSITIONAL)
    """The user name: 1-64 letters, digits or . _ @ -."""


Precision = Literal["auto", "float32", "float16", "bfloat16"]
Attention = Literal["sdpa", "eager"]
PRECISIONS = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class KandinskyOptions:
    """How the Kandinsky 2.2 pipelines run (the flags of `clipsae serve` and `clipsae icons`;
    `app.kandinsky.load_pipelines` applies them)."""

    precision: Precision = "auto"
    """Compute precision of the Kandinsky pipelines: auto (float16 on CUDA, float32 on the CPU),
    float32, float16 or bfloat16."""
    attention: Attention = "sdpa"
    """Attention kernels: sdpa (PyTorch's scaled_dot_product_attention, flash / memory-efficient
    kernels on CUDA; diffusers' and transformers' default) or eager (plain matmul + softmax)."""
    compile_decoder: bool = False
    """torch.compile the decoder's UNet, channels-last (for CUDA: the first generation at each
    resolution compiles, about a minute; later ones run the compiled graph)."""


@dataclass(frozen=True)
class IconsConfig:
    """`clipsae icons KATLAS`: precompute the feature icons of a steering atlas."""

    katlas: str = field(metadata=POSITIONAL)
    """A steering atlas (a Kandinsky-prior SAE's atlas); icons go to KATLAS/icons/."""
    prior: str = KANDINSKY_PRIOR
    """Kandinsky 2.2 prior: hub id (from the HF cache) or local diffusers folder."""
    decoder: str = KANDINSKY_DECODER
    """Kandinsky 2.2 decoder: hub id (from the HF cache) or local diffusers folder."""
    tiny_kandinsky: bool = False
    """Tiny random Kandinsky components (CPU demo of the mechanics)."""
    size: int = 512
    """Icon resolution in pixels (512 with the real decoder on a GPU; 64 on a CPU)."""
    steps: int = 12
    """Decoder steps per icon."""
    seed: int = 0
    """Noise seed, the same for every icon."""
    strength: float = 1.0
    """Each latent is set to strength × its highest activation over the atlas's images."""
    latents: str | None = None
    """Which latents: N (the N most frequent), ids a,b,c, ranges a-b, or one id 'a,' (default:
    every latent that fires)."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""

    def __post_init__(self) -> None:
        parse_latents(self.latents)  # a bad --latents fails before Kandinsky is loaded


@dataclass(frozen=True)
class CollageConfig:
    """One `clipsae collage` run."""

    atlas: str = field(metadata=POSITIONAL)
    """An atlas folder (clipsae atlas) whose images are available."""
    out: str
    """Folder for the PNGs (latent_<id>.png)."""
    latents: str | None = None
    """Which latents: N (the N most frequent), ids a,b,c, ranges a-b, or one id 'a,'."""
    top: int | None = None
    """The N most frequent latents (the same as --latents N)."""
    columns: int = 4
    """Images per row."""
    tile: int = 224
    """Side of each image in pixels."""
    masks: bool = True
    """Tint each image's patches by the latent's activation (--no-masks: plain images)."""
    images_root: str | None = None
    """Where the atlas's images are (default: the atlas's images_root)."""

    def __post_init__(self) -> None:
        if (self.latents is None) == (self.top is None):
            raise ValueError("name the latents with --latents a,b,c (or N) or --top N (one of the two)")
        if self.top is not None and self.top <= 0:
            raise ValueError(f"--top must be > 0; got {self.top}")
        if not 1 <= self.columns <= 16 or not 64 <= self.tile <= 1024:
            raise ValueError(f"--columns must be 1..16 and --tile 64..1024; got {self.columns}, {self.tile}")
        parse_latents(self.latents)
