"""Images for the processor tests, made with Pillow (and by hand where Pillow refuses to)."""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any

from PIL import ExifTags, Image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def is_red(pixel: Any) -> bool:
    r, g, b = pixel[:3]
    return bool(r > 200 and g < 60 and b < 60)


def is_blue(pixel: Any) -> bool:
    r, g, b = pixel[:3]
    return bool(b > 200 and r < 60 and g < 60)


def encode(im: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Incompressible RGB pixels, so that cutting the file cuts the image data."""
    data = random.Random(seed).randbytes(size[0] * size[1] * 3)
    return Image.frombytes("RGB", size, data)


def cornered(size: tuple[int, int] = (200, 100)) -> Image.Image:
    """Blue, with a red quarter-by-quarter block in the stored top-left corner."""
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, size[0] // 4, size[1] // 4))
    return im


def with_orientation(im: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(im, fmt, exif=exif)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, rows: int = 0) -> bytes:
    """A bilevel PNG declaring ``width`` x ``height``; ``rows`` of real zero data (a zip bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def gif_bomb() -> bytes:
    """A GIF whose screen and only frame are 65535 x 65535, with one byte of image data."""
    screen = struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x08\x01\x00\x00"
    return b"GIF89a" + screen + frame + b";"


# Where the stored top-left corner is shown, for each orientation (as the EXIF spec defines it).
CORNER = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


def corner_colours(im: Image.Image) -> dict[str, Any]:
    w, h = im.size
    rgb = im.convert("RGB")
    points = {"tl": (0.1, 0.1), "tr": (0.9, 0.1), "bl": (0.1, 0.9), "br": (0.9, 0.9)}
    return {k: rgb.getpixel((int(x * w), int(y * h))) for k, (x, y) in points.items()}
