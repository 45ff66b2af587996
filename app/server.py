"""Assemble and launch the app (`clipsae serve`, `clipsae demo`).

    clipsae serve --atlas atlas/ --steer-atlas katlas/            # real Kandinsky if cached/local
    clipsae serve --atlas atlas/ --steer-atlas katlas/ --tiny-kandinsky

Binds 127.0.0.1 unless --host says otherwise; never opens a public share link; analytics
off. Images reach the browser as rendered thumbnails through Gradio's own cache: no
path on disk is served directly. With an auth file (`--auth-file`, app/auth.py) every
page, API call and file route needs a login.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path


from sae_core.device import is_cuda, resolve_device
from sae_core.io import load_sae

from .atlas import Atlas
from .auth import login_checker
from .file_cache import ImmutableFiles
from .handlers import Handlers
from .icons import IconSpec, IconStore
from .inputs import MAX_UPLOAD
from .inspect_image import Inspector
from .configs import KandinskyOptions
from .kandinsky import DECODER_ID, PRIOR_ID, KandinskyPipes, missing_parts, pipelines_for
from .steer import Steerer
from .timing import measure
from .ui import build_ui
from .ui_assets import CSS, PAGE_JS

log = logging.getLogger(__name__)


def _pipelines(
    prior: str, decoder: str, tiny: bool, dev: str, notes: list[str], options: KandinskyOptions | None = None
) -> KandinskyPipes | None:
    """The Kandinsky pipelines, or None with a note saying why steering is off (never an exit)."""
    gaps = {} if tiny else {m: missing_parts(m) for m in (prior, decoder)}
    if any(gaps.values()):
        what = "; ".join(f"{m}: missing {', '.join(g)}" for m, g in gaps.items() if g)
        notes.append(
            f"Steering is unavailable: Kandinsky 2.2 is not complete on this machine ({what}). Pass local "
            "diffusers folders with --prior/--decoder, or download the models into the Hugging Face cache."
        )
        return None
    try:
        return pipelines_for(prior, decoder, tiny=tiny, device=dev, options=options)
    except ValueError as exc:
        notes.append(f"Steering is unavailable: {exc}")
        return None


def make_handlers(
    atlas: str | Path,
    steer_atlas: str | Path | None = None,
    prior: str = PRIOR_ID,
    decoder: str = DECODER_ID,
    tiny_kandinsky: bool = False,
    device: str = "auto",
    measure_timings: bool = True,
    images_root: str | Path | None = None,
    kandinsky: KandinskyOptions | None = None,
) -> tuple[Handlers, str]:
    """Open everything once; returns the handlers and the banner text shown on top of the app.
    With a steering atlas and Kandinsky, the decoder is timed here (a few seconds at most)
    so that every resolution shows its expected time and the defaults fit the device.
    `images_root` overrides where both atlases' image paths are resolved (default: as recorded);
    `kandinsky` sets the pipelines' precision, attention kernels and compiled decoder."""
    dev = str(resolve_device(device))
    a = Atlas(atlas, images_root=images_root)
    notes = []
    if a.manifest["has_images"] and a.images_root is None:
        notes.append(
            "The atlas's images were not found (neither the recorded images root nor one beside the atlas): "
            "thumbnails are placeholders; pass --images-root."
        )
    if a.manifest.get("random_weights"):
        notes.append(
            "⚠️ **The CLIP encoder of this atlas has RANDOM weights** (no pretrained weights were available): "
            "features reflect image statistics, not learned concepts."
        )
    inspector = None
    try:
        inspector = Inspector(a, device=dev)
    except (ValueError, FileNotFoundError) as exc:
        notes.append(f"Inspect is unavailable: {exc}")
    steerer = satlas = timings = None
    if steer_atlas:
        satlas = Atlas(steer_atlas, images_root=images_root)
        pipes = _pipelines(prior, decoder, tiny_kandinsky, dev, notes, kandinsky)
        if pipes is not None:
            try:
                steerer = Steerer(pipes, load_sae(satlas.path / "sae", device=dev), device=dev)
            except ValueError as exc:
                notes.append(f"Steering is unavailable: {exc}")
            if pipes.tiny:
                notes.append(
                    "Steering uses **tiny random Kandinsky components** (a demo of the mechanics, not of images)."
                )
        if steerer is not None:
            timings = measure(steerer, dev) if measure_timings else None
            if timings is not None and not is_cuda(dev):
                notes.append(
                    f"Generation runs on the CPU: {timings.label(timings.default_size(), timings.default_steps)}"
                    f" at {timings.default_steps} steps (the resolution list shows each option's time)."
                )
    h = Handlers(a, steerer=steerer, steer_atlas=satlas, inspector=inspector, notices=notes, timings=timings)
    if steerer is not None and satlas is not None:  # icons are cached beside the steering atlas's thumbnails
        spec = IconSpec(size=512 if is_cuda(dev) and not steerer.pipes.tiny else 64)
        h.icons = IconStore(satlas, steerer, h.browsable[satlas.name][1].root, spec)
    return h, "\n\n".join(notes)


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port the app could not listen on, before anything slow is loaded."""
    if not 0 < port < 65536:
        raise ValueError(f"--port {port}: a port is a number from 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a listener refuses it,
        try:  # a just-closed one's TIME_WAIT does not
            s.bind((host, port))
        except OSError as exc:
            raise ValueError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}): another server (another "
                "clipsae?) may hold it; pass --port with a free port"
            ) from None


def serve(
    atlas: str | Path,
    steer_atlas: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    prevent_thread_lock: bool = False,
    announce: str = "",
    auth_file: str | Path | None = None,
    **kwargs,
):
    """Build the UI and launch it; returns the Blocks (running in the background if prevent_thread_lock).
    `announce` is printed once the atlases have loaded, just before the server starts; with
    `auth_file` every route needs a login (the file is checked before anything slow is loaded)."""
    check_port(host, port)
    auth = login_checker(auth_file) if auth_file else None
    handlers, banner = make_handlers(atlas, steer_atlas, **kwargs)
    if announce:
        print(announce, flush=True)
    return launch(
        build_ui(handlers, banner), host, port, share=share, prevent_thread_lock=prevent_thread_lock, auth=auth
    )


def launch(
    demo, host: str = "127.0.0.1", port: int = 7860, share: bool = False, prevent_thread_lock: bool = False, auth=None
):
    """Launch the Blocks with the app's safety settings: the given interface only (127.0.0.1 by
    default), no share link unless asked, uploads capped at MAX_UPLOAD, analytics off (app/__init__.py);
    and its stylesheet and page script (in-place navigation). `auth`: Gradio's login check
    (`app.auth.login_checker`), None for no login. Content-addressed files get a long browser-cache
    lifetime (app/file_cache.py)."""
    from starlette.middleware import Middleware

    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=MAX_UPLOAD,
        show_error=True,
        app_kwargs={"middleware": [Middleware(ImmutableFiles)]},
        prevent_thread_lock=prevent_thread_lock,
        quiet=True,
        css=CSS,
        js=PAGE_JS,
        auth=auth,
        auth_message="This clipsae server needs a login (ask its operator for an account)." if auth else None,
    )
    return demo
