"""Long browser-cache lifetimes for Gradio's content-addressed files.

Gradio serves every image it hands the browser from `/gradio_api/file=<cache>/<sha256 of the
content>/<name>`: the folder is the hash of the file's bytes, so one URL always names the same
bytes and a browser may keep it for good. Gradio itself sends no lifetime, so every latent page
re-fetched its ~13 thumbnails. The app's render folders (thumbnails, overlays, histograms;
app/render.py) are Gradio static paths, served from where they lie: their URLs are fixed per atlas
and render version in the same way. `ImmutableFiles` (pure ASGI, streams untouched) adds
`Cache-Control: private, max-age=31536000, immutable` to successful GET/HEAD answers for such
URLs only; the route, its login check and its path checks stay Gradio's own. "private": with
--auth-file the files are a logged-in user's, never for shared proxies.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from .render import RENDER_PREFIX

CACHE_CONTROL = b"private, max-age=31536000, immutable"
_HASHED = re.compile(r"/gradio_api/file=.*/[0-9a-f]{64}/[^/]+$")
# The app's render folders (app/render.py), served as static files: a folder is named by the
# atlas's content hash and the render version, and a file in it by what it draws.
_RENDERED = re.compile(rf"/gradio_api/file=.*/{re.escape(RENDER_PREFIX)}[0-9a-f]{{16}}/[^/]+\.(?:jpg|png)$")


def is_content_addressed(path: str) -> bool:
    """True for a Gradio file URL path whose folder is a SHA-256 content hash, or a render
    folder of the app's (no `..` part)."""
    path = unquote(path)
    return bool(_HASHED.search(path) or _RENDERED.search(path)) and "/../" not in path.replace("\\", "/")


class ImmutableFiles:
    """ASGI middleware: cache-forever headers on content-addressed Gradio file answers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if (
            scope.get("type") != "http"
            or scope.get("method") not in ("GET", "HEAD")
            or not is_content_addressed(scope.get("path", ""))
        ):
            return await self.app(scope, receive, send)

        async def send_with_lifetime(message):
            if message["type"] == "http.response.start" and message.get("status") in (200, 304):
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message = {**message, "headers": headers + [(b"cache-control", CACHE_CONTROL)]}
            await send(message)

        await self.app(scope, receive, send_with_lifetime)
