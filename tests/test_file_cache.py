"""app/file_cache.py: only content-addressed Gradio file answers get a cache-forever lifetime."""

import asyncio

from app.file_cache import CACHE_CONTROL, ImmutableFiles, is_content_addressed

HASH = "a" * 64


def test_only_hashed_file_urls_count_as_content_addressed():
    assert is_content_addressed(f"/gradio_api/file=/tmp/gradio/{HASH}/img_3_160.jpg")
    assert not is_content_addressed("/gradio_api/file=/tmp/clipsae-render-x/img_3_160.jpg")
    assert not is_content_addressed(f"/gradio_api/file=/tmp/gradio/{HASH}/../../etc/passwd")
    assert not is_content_addressed(f"/gradio_api/file=/tmp/gradio/{HASH}/%2e%2e/x/{HASH}/y")
    assert not is_content_addressed("/config") and not is_content_addressed(f"/x/{HASH}/y.jpg")


def test_render_folder_files_count_as_content_addressed():
    """app/render.py's folders are named by the atlas's content hash and the render version."""
    folder = "/gradio_api/file=/tmp/clipsae-render-0123456789abcdef"
    assert is_content_addressed(f"{folder}/img_3_160.jpg") and is_content_addressed(f"{folder}/hist2_4_lin.png")
    assert not is_content_addressed(f"{folder}/text_side_0123.npz")  # data, not a drawing
    assert not is_content_addressed(f"{folder}/../etc/passwd.png")
    assert not is_content_addressed("/gradio_api/file=/tmp/clipsae-render-0123456789abcdeg/img_3_160.jpg")
    assert not is_content_addressed("/x/clipsae-render-0123456789abcdef/img_3_160.jpg")


def _run(path: str, status: int, method: str = "GET") -> list[tuple[bytes, bytes]]:
    sent = []

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": [(b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b"x"})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path}
    asyncio.run(ImmutableFiles(inner)(scope, None, send))
    return sent[0]["headers"]


def test_middleware_sets_the_lifetime_only_on_success_for_hashed_files():
    hashed = f"/gradio_api/file=/tmp/gradio/{HASH}/img.jpg"
    assert _run(hashed, 200) == [(b"cache-control", CACHE_CONTROL)]
    assert _run(hashed, 403) == [(b"cache-control", b"no-store")]  # a refusal is never cached
    assert _run(hashed, 200, "POST") == [(b"cache-control", b"no-store")]
    assert _run("/gradio_api/file=/tmp/x.jpg", 200) == [(b"cache-control", b"no-store")]
