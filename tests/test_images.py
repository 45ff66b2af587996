"""Image decoding: every Pillow mode to the right RGB, every bad kind refused with a reason."""

import io

import numpy as np
import pytest
from PIL import Image

from precompute.images import DEFAULT_MAX_PIXELS, BadImage, decode_image, image_id, list_images


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgba_and_la_are_composited_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[1, 1] = (200, 0, 0, 0)  # fully transparent -> white
    out = np.asarray(decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[1, 1]) == (255, 255, 255)
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], np.uint8), "LA")
    out = np.asarray(decode_image(encode(la, "PNG")))
    assert tuple(out[0, 0]) == (50, 50, 50) and tuple(out[0, 1]) == (255, 255, 255)


def test_palette_with_transparency():
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    out = np.asarray(decode_image(encode(p, "PNG", transparency=1)))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 1]) == (255, 255, 255)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bit():
    arr = np.array([[0, 65535, 32896]], dtype=np.uint16)
    out = np.asarray(decode_image(encode(Image.fromarray(arr), "PNG")))
    assert out.shape == (1, 3, 3)
    assert list(out[0, :, 0]) == [0, 255, 128]


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(decode_image(encode(cmyk, "JPEG", quality=95)))
    r, g, b = out[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_first_frame_of_an_animation():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = np.asarray(decode_image(data))
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_exif_orientation_is_applied():
    arr = np.zeros((2, 4, 3), np.uint8)
    arr[0, 0] = 255  # top-left white in the stored pixels
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(encode(im, "PNG", exif=exif))
    assert out.size == (2, 4)  # width and height swapped
    assert np.asarray(out)[0, 1].min() == 255  # stored top-left ends at the top-right


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"this is not an image", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "unreadable or truncated|not an image"),
    ],
)
def test_bad_bytes_are_refused_with_a_reason(data, reason):
    with pytest.raises(BadImage, match=reason):
        decode_image(data)


def test_truncated_jpeg_is_refused():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    with pytest.raises(BadImage, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_pixel_cap():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(BadImage, match="too large: 100x100"):
        decode_image(data, max_pixels=5000)


def test_listing_is_sorted_recursive_and_ids_are_stable(tmp_path):
    (tmp_path / "b").mkdir()
    for rel in ("b/x.png", "a.JPG", "c.txt", ".hidden.png"):
        (tmp_path / rel).write_bytes(b"x")
    root, refs = list_images(tmp_path)
    assert [r.rel_path for r in refs] == ["a.JPG", "b/x.png"]
    assert image_id("a.JPG", b"x") == image_id("a.JPG", b"x") != image_id("a.JPG", b"y")
    (tmp_path / "list.txt").write_text("b/x.png\n# comment\n\na.JPG\n")
    _, from_list = list_images(tmp_path / "list.txt")
    assert [r.rel_path for r in from_list] == ["a.JPG", "b/x.png"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` (what a decompression bomb declares); no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_in_our_words():
    # 30000 x 30000 is over twice PIL's own limit, so Image.open refuses it before our cap does
    with pytest.raises(BadImage) as info:
        decode_image(_png_header(30000, 30000))
    message = str(info.value)
    assert (
        message
        == f"too large: {30000 * 30000} pixels exceeds the cap of {DEFAULT_MAX_PIXELS} (refused before decoding)"
    )
    assert "DOS" not in message and "bomb" not in message.lower()
