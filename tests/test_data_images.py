"""Image integrity checks and mode/orientation handling of core.data.images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from core.data import images
from core.data.images import (
    ImageLoadError,
    check_image_bytes,
    draft_size,
    load_rgb,
    looks_like_image,
    sniff_format,
    upright_jpeg_pixels,
)


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise_jpeg(size: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    return _encode(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)), "JPEG")


def _save(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- load_rgb: modes and orientation -------------------------------------------------------------


def test_cmyk_jpeg_loads_as_rgb(tmp_path: Path) -> None:
    path = _save(
        tmp_path, "cmyk.jpg", _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    )
    im = load_rgb(path)
    assert im.mode == "RGB" and im.size == (16, 16)
    r, g, b = im.getpixel((8, 8))
    assert r > 230 and g < 30 and b < 30  # pure red in CMYK


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((1, 1), 1)
    path = _save(tmp_path, "p.png", _encode(im, "PNG", transparency=0))
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent index -> white
    assert out.getpixel((1, 1)) == (0, 0, 255)


def test_palette_without_transparency_keeps_colours(tmp_path: Path) -> None:
    im = Image.new("RGB", (8, 8), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    out = load_rgb(_save(tmp_path, "p.gif", _encode(im, "GIF")))
    assert out.mode == "RGB" and out.getpixel((3, 3)) == (10, 200, 30)


def test_la_and_rgba_are_composited_on_white(tmp_path: Path) -> None:
    la = Image.new("LA", (4, 4), (100, 255))
    la.putpixel((0, 0), (100, 0))
    out = load_rgb(_save(tmp_path, "la.png", _encode(la, "PNG")))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (100, 100, 100)

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 128))
    r, g, b = load_rgb(_save(tmp_path, "rgba.png", _encode(rgba, "PNG"))).getpixel((2, 2))
    assert r == 255 and 120 <= g <= 135 and 120 <= b <= 135


def test_16_bit_grey_is_scaled_to_8_bit(tmp_path: Path) -> None:
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    im = Image.fromarray(arr)
    path = _save(tmp_path, "grey16.png", _encode(im, "PNG"))
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really stored as 16-bit
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = _save(tmp_path, "rot.jpg", _encode(im, "JPEG", exif=exif, quality=95))
    out = load_rgb(path)
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_load_errors_name_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="truncated"):
        load_rgb(_save(tmp_path, "cut.jpg", _noise_jpeg()[:600]))
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_rgb(_save(tmp_path, "text.jpg", b"just some text"))
    with pytest.raises(ImageLoadError, match="no such file"):
        load_rgb(tmp_path / "missing.png")


def test_load_rgb_reports_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path, "big.png", _encode(Image.new("RGB", (64, 64)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_rgb(path)


# --- the TurboJPEG decode path (simplejpeg) against Pillow's ----------------------------------------


def _pillow_rgb(path: Path, min_side: int | None) -> np.ndarray:
    """What load_rgb returned before the TurboJPEG path: Pillow's decode, draft, orientation and RGB."""
    with Image.open(path) as im:
        if min_side is not None and min(im.size) >= 2 * min_side:
            im.draft("RGB", draft_size(im.size, min_side))
        im.load()
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _photo(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(1)
    small = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))
    return small.resize(size, Image.Resampling.BILINEAR)  # smooth, like a photo: chroma subsampling shows


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("progressive", [False, True])
def test_turbojpeg_decodes_as_pillow_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, orientation: int, progressive: bool
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(_photo((900, 600)).convert(mode), "JPEG", quality=90, exif=exif, progressive=progressive)
    path = _save(tmp_path, "p.jpg", data)
    used = []
    real = images._turbo_pixels
    monkeypatch.setattr(images, "_turbo_pixels", lambda im, m: used.append(1) or real(im, m))
    for min_side in (None, 64, 150, 300):  # full size, 1/8, 1/4 and 1/2 scale
        got = load_rgb(path, min_side=min_side)
        assert got.mode == "RGB"
        assert np.array_equal(np.asarray(got), _pillow_rgb(path, min_side)), min_side
    assert len(used) == 4  # the TurboJPEG path decoded every one


def test_jpegs_turbojpeg_cannot_take_go_to_pillow(tmp_path: Path) -> None:
    cmyk = _save(tmp_path, "cmyk.jpg", _encode(_photo((40, 30)).convert("CMYK"), "JPEG"))
    with Image.open(cmyk) as im:
        assert images._turbo_pixels(im, None) is None
    assert np.array_equal(np.asarray(load_rgb(cmyk)), _pillow_rgb(cmyk, None))
    with pytest.raises(ImageLoadError, match="truncated"):  # Pillow's diagnosis, not TurboJPEG's
        load_rgb(_save(tmp_path, "cut.jpg", _encode(_photo((200, 150)), "JPEG")[:900]))
    with pytest.raises(ImageLoadError, match="truncated image data"):
        images.load_rgb_bytes(_encode(_photo((200, 150)), "JPEG")[:900])


def test_upright_jpeg_pixels_only_for_an_upright_jpeg_of_the_size(tmp_path: Path) -> None:
    photo = _photo((64, 64))
    upright = _save(tmp_path, "up.jpg", _encode(photo, "JPEG", quality=90))
    got = upright_jpeg_pixels(upright, (64, 64))
    assert got is not None and got.shape == (64, 64, 3)
    assert np.array_equal(got, np.asarray(load_rgb(upright)))
    assert upright_jpeg_pixels(upright, (64, 48)) is None
    exif = Image.Exif()
    exif[0x0112] = 3
    assert (
        upright_jpeg_pixels(_save(tmp_path, "rot.jpg", _encode(photo, "JPEG", exif=exif)), (64, 64)) is None
    )
    assert upright_jpeg_pixels(_save(tmp_path, "p.png", _encode(photo, "PNG")), (64, 64)) is None
    assert upright_jpeg_pixels(_save(tmp_path, "cut.jpg", _encode(photo, "JPEG")[:300]), (64, 64)) is None
    assert upright_jpeg_pixels(tmp_path / "missing.jpg", (64, 64)) is None


# --- check_image_bytes: one case per problem kind --------------------------------------------------


def test_check_accepts_good_images() -> None:
    assert check_image_bytes(_noise_jpeg()) is None
    assert check_image_bytes(_encode(Image.new("L", (9, 9)), "PNG")) is None


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (b"", "empty_file", "zero-byte"),
        (b"<html>not a picture</html>", "not_an_image", "not an image"),
        (b"\xff\xd8\xff\xe0" + bytes(300), "unreadable_image", "JPEG header cannot be parsed"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "truncated_image", "Truncated File Read"),
    ],
)
def test_check_reports_bad_bytes(data: bytes, kind: str, reason: str) -> None:
    issue = check_image_bytes(data)
    assert issue is not None and issue.kind == kind and reason in issue.reason


def test_check_reports_corrupt_compressed_data() -> None:
    png = bytearray(_encode(Image.open(io.BytesIO(_noise_jpeg(32))), "PNG"))
    start = png.find(b"IDAT") + 6
    png[start : start + 40] = bytes(b ^ 0x55 for b in png[start : start + 40])
    issue = check_image_bytes(bytes(png))
    assert issue is not None and issue.kind == "unreadable_image" and "cannot decode" in issue.reason


@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_check_detects_truncated_jpeg_and_png(fraction: float) -> None:
    jpeg = _noise_jpeg()
    png = _encode(Image.open(io.BytesIO(jpeg)), "PNG")
    for data in (jpeg, png):
        issue = check_image_bytes(data[: int(len(data) * fraction)])
        assert issue is not None and issue.kind == "truncated_image", issue


def test_check_reports_bombs_over_and_near_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encode(Image.new("RGB", (40, 40)), "PNG")  # 1600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # > 2x the limit: Pillow raises
    issue = check_image_bytes(data)
    assert issue is not None and issue.kind == "decompression_bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # between 1x and 2x: Pillow only warns
    issue = check_image_bytes(data)
    assert issue is not None and issue.kind == "decompression_bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert check_image_bytes(data) is None


def test_images_are_recognised_by_content(tmp_path: Path) -> None:
    png = _encode(Image.new("RGB", (4, 4)), "PNG")
    assert sniff_format(png) == "PNG" and sniff_format(_noise_jpeg()) == "JPEG"
    assert looks_like_image(_save(tmp_path, "photo.dat", png))
    assert looks_like_image(_save(tmp_path, "noext", _noise_jpeg()))
    assert looks_like_image(_save(tmp_path, "fake.jpg", b"text"))  # by name: checked (and reported) later
    assert not looks_like_image(_save(tmp_path, "notes.txt", b"hello"))
