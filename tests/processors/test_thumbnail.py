"""The ``thumbnail`` processor run directly on real images made here with Pillow.

Through the API and the worker's child process: test_thumbnail_api.py.
"""

from __future__ import annotations

import errno
import io
import random
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile, ImageOps, _webp
from pydantic import ValidationError

from filejobs.processors.base import Cancelled, Context, Limits, Output, ProcessorError
from filejobs.processors.thumbnail import Thumbnail, ThumbnailParams, _webp_size
from filejobs.sniff import sniff
from tests.processors.images import (
    BLUE,
    CORNER,
    RED,
    corner_colours,
    cornered,
    encode,
    gif_bomb,
    is_blue,
    is_red,
    noise,
    png_bomb,
    with_orientation,
)

# ---- running the processor directly --------------------------------------------------------


class Run:
    """Runs :class:`Thumbnail` on bytes in ``tmp_path``, recording progress."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.progress: list[tuple[float, str | None]] = []

    def context(self, content: bytes, name: str, max_pixels: int, cancelled: bool) -> Context:
        source = self.tmp_path / "upload.bin"
        source.write_bytes(content)
        return Context(
            input_path=source,
            output_dir=self.tmp_path / "out",
            file_name=name,
            content_type=sniff(content[:65536]),
            progress=lambda fraction, message=None: self.progress.append((fraction, message)),
            cancelled=lambda: cancelled,
            limits=Limits(max_image_pixels=max_pixels),
        )

    def __call__(
        self,
        content: bytes,
        *,
        name: str = "photo.jpg",
        max_pixels: int = 64_000_000,
        cancelled: bool = False,
        **params: Any,
    ) -> Output:
        ctx = self.context(content, name, max_pixels, cancelled)
        return Thumbnail().run(ctx, ThumbnailParams(**params))

    def fails(self, content: bytes, code: str, **kwargs: Any) -> ProcessorError:
        with pytest.raises(ProcessorError) as caught:
            self(content, **kwargs)
        error = caught.value
        assert error.code == code, error.message
        assert not error.retryable
        assert str(self.tmp_path) not in error.message
        assert "upload.bin" not in error.message
        assert "Traceback" not in error.message
        return error


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


def opened(output: Output) -> Image.Image:
    assert output.file is not None
    im = Image.open(output.file)
    im.load()
    return im


# ---- formats and modes ----------------------------------------------------------------------


def _cases() -> list[Any]:
    rgba = Image.new("RGBA", (400, 300), (*RED, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 200, 300))
    palette = Image.new("RGB", (400, 300), RED).convert("P", palette=Image.Palette.ADAPTIVE)
    return [
        pytest.param(encode(noise((400, 300)), "JPEG"), "JPEG", "RGB", id="jpeg"),
        pytest.param(encode(rgba, "PNG"), "PNG", "RGBA", id="png-alpha"),
        pytest.param(encode(palette, "GIF"), "GIF", "P", id="gif-palette"),
        pytest.param(encode(noise((400, 300)), "WEBP"), "WEBP", "RGB", id="webp"),
        pytest.param(encode(noise((400, 300)), "BMP"), "BMP", "RGB", id="bmp"),
        pytest.param(encode(noise((400, 300)), "TIFF"), "TIFF", "RGB", id="tiff"),
        pytest.param(encode(Image.new("CMYK", (400, 300)), "JPEG"), "JPEG", "CMYK", id="jpeg-cmyk"),
        pytest.param(encode(Image.new("I;16", (400, 300), 60000), "PNG"), "PNG", "I;16", id="png-16bit"),
        pytest.param(encode(Image.new("1", (400, 300), 1), "TIFF"), "TIFF", "1", id="tiff-bilevel"),
    ]


@pytest.mark.parametrize(("content", "fmt", "mode"), _cases())
@pytest.mark.parametrize("out", ["webp", "png", "jpeg"])
def test_each_format_and_mode(run: Run, content: bytes, fmt: str, mode: str, out: str) -> None:
    assert Thumbnail.accepts_type(sniff(content))
    output = run(content, size=100, format=out)
    assert output.result["original"] == {
        "width": 400, "height": 300, "format": fmt, "mode": mode, "animated": False,
    }  # fmt: skip
    thumb = output.result["thumbnail"]
    assert (thumb["width"], thumb["height"], thumb["format"]) == (100, 75, out)
    im = opened(output)
    assert im.format == {"webp": "WEBP", "png": "PNG", "jpeg": "JPEG"}[out]
    assert im.size == (100, 75)
    assert im.mode == thumb["mode"]
    assert output.file is not None
    assert thumb["bytes"] == output.file.stat().st_size
    assert output.content_type == f"image/{out}"
    assert output.file_name == f"photo.thumb.{'jpg' if out == 'jpeg' else out}"


def test_alpha_is_kept_for_png_and_webp_and_white_for_jpeg(run: Run) -> None:
    im = Image.new("RGBA", (200, 100), (*RED, 255))
    im.paste((0, 0, 0, 0), (0, 0, 100, 100))  # left half fully transparent
    content = encode(im, "PNG")
    for out in ("png", "webp"):
        thumb = opened(run(content, size=50, format=out))
        assert thumb.mode == "RGBA"
        assert thumb.getpixel((5, 12))[3] == 0
        assert thumb.getpixel((45, 12))[3] == 255
    flat = opened(run(content, size=50, format="jpeg")).convert("RGB")
    assert all(channel > 240 for channel in flat.getpixel((5, 12)))
    assert is_red(flat.getpixel((45, 12)))


def test_gif_transparency_survives_as_alpha(run: Run) -> None:
    im = Image.new("P", (100, 100), 0)
    im.putpalette([*RED, *BLUE] + [0] * 762)
    im.paste(1, (0, 0, 50, 100))
    thumb = opened(run(encode(im, "GIF", transparency=1), size=50, format="png"))
    assert thumb.mode == "RGBA"
    assert thumb.getpixel((5, 25))[3] == 0
    assert thumb.getpixel((45, 25)) == (*RED, 255)


def test_sixteen_bit_is_scaled_not_clipped(run: Run) -> None:
    thumb = opened(run(encode(Image.new("I;16", (64, 64), 32896), "PNG"), size=32, format="png"))
    assert thumb.mode == "L"
    assert thumb.getpixel((10, 10)) == 128  # 32896 / 257


MODES = {"jpeg": ("L", "RGB"), "png": ("L", "LA", "RGB", "RGBA"), "webp": ("RGB", "RGBA")}
TIFF_MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I", "I;16", "I;16B", "F"]


@pytest.mark.parametrize("mode", TIFF_MODES)
def test_every_mode_tiff_can_hold(run: Run, mode: str) -> None:
    """TIFF yields the most modes of the accepted formats; each becomes a valid thumbnail."""
    content = encode(Image.new(mode, (80, 40)), "TIFF")
    for out in ("webp", "png", "jpeg"):
        thumb = opened(run(content, size=40, format=out))
        assert thumb.size == (40, 20)
        assert thumb.mode in MODES[out]


def test_premultiplied_alpha_modes_convert() -> None:
    """``La``/``RGBa`` come from TIFFs with associated alpha (Pillow cannot write those itself)."""
    from filejobs.processors.thumbnail import _before_resize, _for_output

    for mode in ("La", "RGBa"):
        im = _before_resize(Image.new(mode, (8, 8), (100, 128) if mode == "La" else (100, 50, 25, 128)))
        assert _for_output(im, "png").mode in ("LA", "RGBA")
        assert _for_output(im, "jpeg").mode == "RGB"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_gives_its_first_frame(run: Run, fmt: str) -> None:
    frames = [Image.new("RGB", (120, 60), colour) for colour in (RED, BLUE, BLUE)]
    content = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    output = run(content, size=60, format="png")
    assert output.result["original"]["animated"] is True
    assert is_red(opened(output).convert("RGB").getpixel((30, 15)))


# ---- size, aspect ratio, params -------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "edge", "expected"),
    [
        ((640, 480), 64, (64, 48)),
        ((480, 640), 64, (48, 64)),
        ((3000, 2000), 256, (256, 171)),
        ((1000, 10), 100, (100, 1)),
        ((100, 50), 256, (100, 50)),  # never enlarged
        ((300, 300), 300, (300, 300)),
        ((1, 1), 16, (1, 1)),
        ((16, 5000), 16, (1, 16)),
    ],
)
def test_size_keeps_the_aspect_ratio_and_never_enlarges(
    run: Run, size: tuple[int, int], edge: int, expected: tuple[int, int]
) -> None:
    output = run(encode(Image.new("RGB", size, RED), "PNG"), size=edge, format="png")
    assert opened(output).size == expected
    assert (output.result["thumbnail"]["width"], output.result["thumbnail"]["height"]) == expected


def test_icc_profile_is_kept_only_in_its_colour_space(run: Run) -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = run(encode(noise((64, 64)), "JPEG", icc_profile=srgb), size=32, format="png")
    assert opened(rgb).info.get("icc_profile") == srgb
    cmyk = run(encode(Image.new("CMYK", (64, 64)), "JPEG", icc_profile=srgb), size=32, format="png")
    assert not opened(cmyk).info.get("icc_profile")


@pytest.mark.parametrize("out", ["webp", "png", "jpeg"])
def test_metadata_is_dropped(run: Run, out: str) -> None:
    """No EXIF (camera, GPS) in thumbnails, and no Orientation that would turn them a second time."""
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0112] = 6  # Orientation
    output = run(encode(noise((64, 32)), "JPEG", exif=exif, comment=b"private"), size=32, format=out)
    assert output.file is not None
    data = output.file.read_bytes()
    assert b"SecretCam" not in data
    assert b"private" not in data
    assert not opened(output).getexif()


def test_defaults_are_webp_at_256(run: Run) -> None:
    output = run(encode(noise((1024, 768)), "JPEG"), name="holiday.photo.jpeg")
    assert opened(output).format == "WEBP"
    assert opened(output).size == (256, 192)
    assert output.file_name == "holiday.photo.thumb.webp"
    assert output.content_type == "image/webp"


def test_large_jpeg_is_drafted_and_still_sharp_sized(run: Run) -> None:
    output = run(encode(cornered((4000, 3000)), "JPEG"), size=200, format="png")
    thumb = opened(output)
    assert thumb.size == (200, 150)
    assert is_red(thumb.convert("RGB").getpixel((10, 10)))


@pytest.mark.parametrize(
    "params",
    [{"size": 0}, {"size": 15}, {"size": 4097}, {"size": 100000}, {"format": "gif"}, {"colour": "red"}],
)
def test_bad_params_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ThumbnailParams(**params)


def test_progress_steps_and_cancellation(run: Run) -> None:
    run(encode(noise((300, 200)), "PNG"))
    assert [message for _, message in run.progress] == ["opened", "decoded", "resized", "saved"]
    assert [fraction for fraction, _ in run.progress] == sorted(f for f, _ in run.progress)
    assert run.progress[-1][0] == 1.0
    with pytest.raises(Cancelled):
        run(encode(noise((300, 200)), "PNG"), cancelled=True)


# ---- EXIF orientation -----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(run: Run, orientation: int) -> None:
    source = cornered((200, 100))
    content = with_orientation(source, "JPEG", orientation)
    output = run(content, size=100, format="png")
    thumb = opened(output)
    portrait = orientation >= 5
    assert thumb.size == ((50, 100) if portrait else (100, 50))
    assert (output.result["original"]["width"], output.result["original"]["height"]) == (
        (100, 200) if portrait else (200, 100)
    )  # as displayed
    assert output.result["exif_orientation"] == orientation
    assert output.result["orientation_applied"] is (orientation != 1)
    colours = corner_colours(thumb)
    for corner, colour in colours.items():
        assert (is_red if corner == CORNER[orientation] else is_blue)(colour), (corner, colours)
    # Pillow's own reading of the tag agrees.
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(content)))
    assert upright.size == (thumb.width * 2, thumb.height * 2)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_orientation_in_other_formats(run: Run, fmt: str) -> None:
    """Pillow's TIFF decoder turns the image itself; it must not be turned twice."""
    output = run(with_orientation(cornered((200, 100)), fmt, 6), size=100, format="png")
    assert opened(output).size == (50, 100)
    assert output.result["original"]["width"] == 100
    assert (output.result["exif_orientation"], output.result["orientation_applied"]) == (6, True)
    assert is_red(corner_colours(opened(output))["tr"])


def test_no_exif_reports_no_orientation(run: Run) -> None:
    output = run(encode(Image.new("RGB", (20, 10)), "PNG"))
    assert output.result["exif_orientation"] is None
    assert output.result["orientation_applied"] is False


def test_broken_exif_is_ignored(run: Run) -> None:
    content = encode(Image.new("RGB", (40, 20), RED), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")
    output = run(content, size=20)
    assert output.result["exif_orientation"] is None
    assert opened(output).size == (20, 10)


# ---- hostile and broken files -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(png_bomb(100_000, 100_000), id="png-10-gigapixels"),
        pytest.param(png_bomb(20_000, 20_000, rows=20_000), id="png-zip-bomb"),
        pytest.param(gif_bomb(), id="gif-4-gigapixels"),
        pytest.param(encode(Image.new("RGB", (9000, 8000)), "JPEG"), id="jpeg-72-megapixels"),
    ],
)
def test_decompression_bombs_fail_before_decoding(run: Run, content: bytes) -> None:
    started = time.monotonic()
    error = run.fails(content, "image_too_large")
    assert time.monotonic() - started < 5
    assert "64,000,000" in error.message
    assert not (run.tmp_path / "out").exists() or not any((run.tmp_path / "out").iterdir())


@pytest.mark.parametrize("pixels", [110_000, 150_000, 1_000_000])
def test_pixel_limit_is_the_setting(run: Run, pixels: int) -> None:
    """Just above the limit (Pillow's warning, made an error), at twice it (Pillow's error) and
    beyond; a valid image under the limit passes."""
    content = encode(noise((pixels // 100, 100)), "PNG")
    run.fails(content, "image_too_large", max_pixels=100_000)
    assert run(content, max_pixels=pixels).result["original"]["width"] == pixels // 100


def test_own_header_check_backs_up_pillows(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """Were Pillow's bomb check missing, the processor's own check still refuses before decoding."""
    monkeypatch.setattr(Image, "_decompression_bomb_check", lambda *args, **kwargs: None)
    error = run.fails(png_bomb(20_000, 20_000, rows=20_000), "image_too_large")
    assert "20000x20000 = 400,000,000 pixels" in error.message


def test_webp_over_the_pixel_limit_is_refused_before_libwebp_allocates(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libwebp allocates the whole canvas when Pillow opens a WebP (Pillow checks only for twice
    its limit first): the header is read, and the image refused, before that."""
    made: list[int] = []
    real = _webp.WebPAnimDecoder
    monkeypatch.setattr(_webp, "WebPAnimDecoder", lambda data: made.append(1) or real(data))
    content = encode(Image.new("RGB", (1200, 1100)), "WEBP", lossless=True)
    error = run.fails(content, "image_too_large", name="x.webp", max_pixels=1_000_000)
    assert "1200x1100 = 1,320,000 pixels" in error.message
    assert made == []
    assert run(content, name="x.webp", max_pixels=2_000_000).result["original"]["width"] == 1200
    assert made == [1]


@pytest.mark.parametrize(
    "options",
    [{"lossless": True}, {"quality": 50}, {"quality": 50, "exif": b"Exif\x00\x00"}],
    ids=["VP8L", "VP8", "VP8X"],
)
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_webp_size_is_read_from_every_kind_of_header(options: dict[str, Any], mode: str) -> None:
    content = encode(Image.new(mode, (1234, 567)), "WEBP", **options)
    assert _webp_size(content[:30]) == (1234, 567)
    assert _webp_size(content[:29]) is None
    assert _webp_size(encode(Image.new(mode, (12, 5)), "PNG")[:30]) is None


@pytest.mark.parametrize(
    "error",
    [OSError("out of memory error when reading image file"), OSError(errno.ENOMEM, "Cannot allocate memory")],
    ids=["pillow-codec-status", "enomem"],
)
def test_a_decoder_out_of_memory_is_not_called_corrupt(
    run: Run, monkeypatch: pytest.MonkeyPatch, error: OSError
) -> None:
    """The job's memory limit, not the file: MemoryError, which the worker child reports as
    resource_exhausted."""

    def load(self: ImageFile.ImageFile) -> None:
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(MemoryError):
        run(encode(cornered(), "PNG"), name="x.png")


def test_the_warning_filter_does_not_leak(run: Run) -> None:
    before = Image.MAX_IMAGE_PIXELS
    run.fails(encode(noise((200, 100)), "PNG"), "image_too_large", max_pixels=15_000)
    assert before == Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert not any(f[0] == "error" and f[2] is Image.DecompressionBombWarning for f in warnings.filters)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF"])
def test_truncated_images_fail_cleanly(run: Run, fmt: str) -> None:
    content = encode(noise((300, 200)), fmt)
    run.fails(content[: len(content) // 2], "image_truncated")


def test_truncated_webp_fails_cleanly(run: Run) -> None:
    content = encode(noise((300, 200)), "WEBP")
    run.fails(content[: len(content) // 2], "image_corrupt")  # libwebp cannot tell truncated from bad


@pytest.mark.parametrize(("fmt", "header"), [("JPEG", 20), ("PNG", 33), ("PNG", 64), ("TIFF", 8)])
def test_random_bytes_after_a_valid_header_fail_cleanly(run: Run, fmt: str, header: int) -> None:
    content = encode(noise((300, 200)), fmt)
    garbage = content[:header] + random.Random(0).randbytes(len(content) - header)
    assert Thumbnail.accepts_type(sniff(garbage))
    run.fails(garbage, "image_corrupt")


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"GIF89a" + b"\xff" * 3,
        b"\xff\xd8\xff\xe0" + b"\x00" * 10,
        b"II*\x00" + b"\x00" * 10,
        b"BM" + b"\x00" * 20,
        b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    ],
    ids=["png", "gif", "jpeg", "tiff", "bmp", "webp"],
)
def test_a_bare_signature_fails_cleanly(run: Run, content: bytes) -> None:
    assert Thumbnail.accepts_type(sniff(content))
    run.fails(content, "image_corrupt")


@pytest.mark.parametrize(
    ("fmt", "mode"), [("PPM", "RGB"), ("ICO", "RGBA"), ("TGA", "RGB"), ("PCX", "RGB"), ("JPEG2000", "RGB")]
)
def test_only_the_accepted_decoders_are_used(run: Run, fmt: str, mode: str) -> None:
    """Pillow reads these, but they are not accepted: not sniffed as accepted, and not decoded
    even when they reach the processor."""
    content = encode(Image.new(mode, (64, 64)), fmt)
    assert not Thumbnail.accepts_type(sniff(content))
    run.fails(content, "image_corrupt")
