"""``thumbnail``: a downscaled copy of an image as WebP, PNG or JPEG (Pillow).

Safety against hostile files:

* Only the decoders of the accepted formats are used (``Image.open(..., formats=DECODERS)``).
* Decompression bombs never get decoded: Pillow's ``MAX_IMAGE_PIXELS`` is set to the operator's
  limit (``FILEJOBS_MAX_IMAGE_PIXELS``), its ``DecompressionBombWarning`` is turned into an error,
  and the declared width x height is checked again before anything is decoded -> ``image_too_large``.
* What decoding will take is checked against what the job's memory limit leaves
  (``FILEJOBS_JOB_MEMORY_LIMIT``) before decoding, from the size (after JPEG's ``draft``), the bytes
  per pixel of the mode and the full-size copies decoding and shrinking make (a WebP: four) ->
  ``image_too_large``. A WebP is checked from its header before Pillow opens it, since libwebp
  allocates its canvas on opening. Only the first frame of an animation is ever decoded, so the
  number of frames costs nothing. Should a decoder still run out, the job fails
  ``resource_exhausted`` (the worker child's memory limit).
* ``LOAD_TRUNCATED_IMAGES`` stays off: truncated files fail with ``image_truncated``, anything else
  the decoders refuse with ``image_corrupt``. Messages never carry a server path.

Choices: images are never enlarged (a 100x50 image with ``size`` 256 stays 100x50); the EXIF
orientation (tags 1-8, as ``ImageOps.exif_transpose`` reads it) is applied after downscaling, so a
portrait photo stored sideways comes out portrait, and the result's ``original`` size is the size
as displayed; animated GIF/WebP/PNG give their first frame; metadata (EXIF, XMP, comments) is
dropped, an ICC profile is kept when the colour space is unchanged.
"""

from __future__ import annotations

import errno
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import UnidentifiedImageError  # PIL's __init__ alone is small

from filejobs.lazy import lazy_module

if TYPE_CHECKING:
    from PIL import ExifTags, Image, ImageFile, TiffImagePlugin
else:  # Pillow loads when a job first needs it, not in the API process (see filejobs.lazy)
    ExifTags = lazy_module("PIL.ExifTags")
    Image = lazy_module("PIL.Image")
    ImageFile = lazy_module("PIL.ImageFile")
    TiffImagePlugin = lazy_module("PIL.TiffImagePlugin")
from pydantic import BaseModel, ConfigDict, Field

from filejobs.processors.base import Cancelled, Context, Limits, Output, Processor, ProcessorError

DECODERS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
REDUCING_GAP = 2.0  # draft/reduce to about twice the target first, then resample properly
#: Memory a job needs beyond the pixels: a malloc arena, the encoder's buffers, Python objects.
MEMORY_SLACK = 64 * 2**20
#: Decoding a WebP holds libwebp's canvas and frame buffer and Pillow's copy of the frame besides
#: the image, 4 bytes a pixel each, whatever the mode (measured: scripts/image_memory.py).
WEBP_BYTES_PER_PIXEL = 16

# format param → (Pillow writer, content type, save options)
_WRITERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "webp": ("WEBP", "image/webp", {"quality": 80, "method": 4}),
    "png": ("PNG", "image/png", {}),
    "jpeg": ("JPEG", "image/jpeg", {"quality": 85, "optimize": True}),
}
_EXTENSIONS = {"webp": "webp", "png": "png", "jpeg": "jpg"}

# EXIF orientation → the name of the transpose that shows the image upright (as
# ImageOps.exif_transpose); names, so Pillow is not loaded before a job needs it.
_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


class ThumbnailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(
        default=256,
        ge=16,
        le=4096,
        description="Longest edge of the thumbnail in pixels; smaller images are not enlarged.",
    )
    format: Literal["webp", "png", "jpeg"] = Field(default="webp", description="Output format.")


@contextmanager
def _bomb_guard(max_pixels: int) -> Iterator[None]:
    """Pillow's own bomb check at ``max_pixels``, its warning raised as an error, no truncated loads.

    Module-wide Pillow settings: fine in the worker child, which runs one processor at a time.
    """
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # Pillow's complaints about hostile files ("Corrupt EXIF data", ...) would flood the log.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _too_large(limit: int, size: tuple[int, int] | None = None) -> ProcessorError:
    declared = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, " if size else ""
    return ProcessorError(
        "image_too_large",
        f"The image is larger ({declared}declared in its header) than the limit of {limit:,} "
        "pixels; it was not decoded.",
    )


def _webp_size(header: bytes) -> tuple[int, int] | None:
    """The canvas size a WebP file declares in its first 30 bytes (RIFF header and first chunk)."""
    if len(header) < 30 or header[:4] != b"RIFF" or header[8:12] != b"WEBP":
        return None
    chunk = header[12:16]
    if chunk == b"VP8 " and header[23:26] == b"\x9d\x01\x2a":  # a key frame's start code
        width, height = struct.unpack_from("<HH", header, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8X":
        return int.from_bytes(header[24:27], "little") + 1, int.from_bytes(header[27:30], "little") + 1
    if chunk == b"VP8L" and header[20] == 0x2F:  # the lossless signature byte
        bits = int.from_bytes(header[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _peak_bytes_per_pixel(im: Image.Image) -> int:
    """Bytes per pixel that decoding and shrinking ``im`` hold at once, at full size: the decoded
    image (Pillow stores 2-4 bands in 4 bytes) plus the full-size copies :func:`_before_resize` and
    ``resize`` make (measured for each mode with scripts/image_memory.py)."""
    if im.format == "WEBP":
        return WEBP_BYTES_PER_PIXEL
    mode = im.mode
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    if mode == "PA" or (mode in ("P", "1", "L", "RGB") and "transparency" in im.info):
        return stored + 8  # converted to RGBA, then premultiplied for resampling
    if mode.startswith("I;16"):
        return stored + 8  # to 32-bit, then scaled
    return stored + {"1": 1, "P": 4, "LA": 4, "RGBA": 4}.get(mode, 0)  # to L, to RGB, premultiplied


def _check_memory(size: tuple[int, int], bytes_per_pixel: int, limits: Limits) -> None:
    """Refuse to decode what would not fit in what the job's memory limit leaves."""
    room = limits.memory_headroom()
    need = size[0] * size[1] * bytes_per_pixel
    if room is not None and need + MEMORY_SLACK > room:
        raise ProcessorError(
            "image_too_large",
            f"Decoding the image ({size[0]}x{size[1]}) would take about {need / 2**20:,.0f} MiB, more "
            f"than the {max(0, room - MEMORY_SLACK) / 2**20:,.0f} MiB the job's memory limit leaves; "
            "it was not decoded.",
        )


@contextmanager
def _decoding(limit: int) -> Iterator[None]:
    """Turn whatever a decoder raises on a hostile or broken file into a clean job failure."""
    try:
        yield
    except (ProcessorError, Cancelled, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(limit) from exc
    except UnidentifiedImageError as exc:  # its message names the file: never pass it on
        raise ProcessorError(
            "image_corrupt", "The file is not a readable JPEG, PNG, GIF, WebP, BMP or TIFF image."
        ) from exc
    except Exception as exc:
        text = str(exc)
        if "out of memory" in text.lower() or getattr(exc, "errno", None) == errno.ENOMEM:
            raise MemoryError from exc  # the job's memory limit, not the file: resource_exhausted
        if isinstance(exc, EOFError) or "truncated" in text.lower():
            raise ProcessorError(
                "image_truncated", "The image data ends early: the file is truncated."
            ) from exc
        detail = text if text and "/" not in text and "\\" not in text else type(exc).__name__
        raise ProcessorError("image_corrupt", f"The image data is corrupt ({detail[:120]}).") from exc


def _orientation(im: Image.Image) -> int | None:
    """The EXIF (or XMP) orientation tag, 1-8, or None; a broken EXIF block is ignored.

    Only for a loaded image: this must not swallow a decoding error.
    """
    try:
        value = im.getexif().get(ExifTags.Base.Orientation)
    except Exception:
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _target_size(width: int, height: int, edge: int) -> tuple[int, int]:
    """The largest size within ``edge``x``edge`` with the image's aspect ratio; never larger."""
    if width <= edge and height <= edge:
        return width, height
    if width >= height:
        return edge, max(1, round(height * edge / width))
    return max(1, round(width * edge / height)), edge


def _before_resize(im: Image.Image) -> Image.Image:
    """Modes that resize poorly (palette, bilevel: nearest-neighbour), not at all (16-bit), or keep
    their transparency in ``info``; the rest is converted after resizing, on fewer pixels."""
    if im.mode in ("P", "PA", "1", "L", "RGB") and "transparency" in im.info:
        return im.convert("RGBA")
    if im.mode in ("P", "PA"):
        return im.convert("RGBA" if im.mode == "PA" else "RGB")
    if im.mode == "1":
        return im.convert("L")
    if im.mode.startswith("I;16"):  # 16-bit greyscale: to 8 bits by scaling, not clipping
        return im.convert("I").point(lambda v: v / 257).convert("L")
    return im


def _to_8bit(im: Image.Image) -> Image.Image:
    """32-bit integer or float greyscale to ``L``, stretched when outside 0..255."""
    low, high = im.getextrema()
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and (low < 0 or high > 255):
        span = float(high - low) or 1.0
        return im.point(lambda v: (v - low) * (255 / span)).convert("L")
    return im.convert("L")


def _for_output(im: Image.Image, fmt: str) -> Image.Image:
    """The output's mode: JPEG gets RGB (alpha flattened onto white) or L; PNG/WebP keep alpha."""
    if im.mode in ("I", "F"):
        im = _to_8bit(im)
    elif im.mode == "La":  # premultiplied alpha: only LA converts from it
        im = im.convert("LA")
    alpha = im.has_transparency_data
    if fmt == "jpeg":
        if alpha:
            rgba = im.convert("RGBA")
            flat = Image.new("RGB", rgba.size, "white")
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return im if im.mode in ("L", "RGB") else im.convert("RGB")
    if alpha:
        return im if im.mode == "RGBA" or (fmt == "png" and im.mode == "LA") else im.convert("RGBA")
    if im.mode == "RGB" or (fmt == "png" and im.mode == "L"):
        return im
    return im.convert("RGB")


def _icc_profile(source_mode: str, out: Image.Image, info: dict[Any, Any]) -> bytes | None:
    """The source's ICC profile, when the output is still in the colour space it describes."""
    profile = info.get("icc_profile")
    if not isinstance(profile, bytes) or not profile:
        return None
    rgb, grey = ("RGB", "RGBA", "RGBX"), ("L", "LA")
    if (source_mode in rgb and out.mode in rgb) or (source_mode in grey and out.mode in grey):
        return profile
    return None


class Thumbnail(Processor):
    name = "thumbnail"
    version = "1"
    description = (
        "Makes a thumbnail of a JPEG, PNG, GIF, WebP, BMP or TIFF image: longest edge `size` pixels "
        "(never enlarged), aspect ratio kept, EXIF orientation applied, first frame of animations; "
        "written as WebP, PNG or JPEG. Images above the pixel limit, or that would not fit in the job's "
        "memory limit once decoded, fail with image_too_large."
    )
    accepts = (
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/x-ms-bmp",  # what filejobs.sniff calls BMP
        "image/tiff",
    )
    Params = ThumbnailParams

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, ThumbnailParams)
        limit = ctx.limits.max_image_pixels
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        with _bomb_guard(limit), open(ctx.input_path, "rb") as handle:
            webp = _webp_size(handle.read(30))
            if webp is not None:  # libwebp allocates the whole canvas when Pillow opens the file
                if webp[0] * webp[1] > limit:
                    raise _too_large(limit, webp)
                _check_memory(webp, WEBP_BYTES_PER_PIXEL, ctx.limits)
            handle.seek(0)
            with _decoding(limit):
                im = Image.open(handle, formats=DECODERS)
                if im.width * im.height > limit:
                    raise _too_large(limit, im.size)
                animated = bool(getattr(im, "is_animated", False))  # looks one frame ahead
                if im.width * im.height > limit:  # a GIF's first frame may widen the canvas
                    raise _too_large(limit, im.size)
            stored, source_mode = im.size, im.mode
            # Pillow's TIFF decoder turns the image upright itself and drops the tag while loading.
            tiff_tag = (
                im.tag_v2.get(ExifTags.Base.Orientation)
                if isinstance(im, TiffImagePlugin.TiffImageFile)
                else None
            )
            ctx.progress(0.1, "opened")
            ctx.check_cancelled()

            with _decoding(limit):
                drafted = im.draft(None, (params.size * 2, params.size * 2))  # JPEG: decode at 1/2..1/8
                _check_memory(im.size, _peak_bytes_per_pixel(im), ctx.limits)
                im.load()
            # Read only once loaded: PNG's getexif() loads the image (its eXIf chunk may follow the data).
            pending = _orientation(im)
            ctx.progress(0.6, "decoded")
            ctx.check_cancelled()

            work = _before_resize(im)
            final = _target_size(*stored, params.size)
            if work.size != final or drafted is not None:
                box = drafted[1] if drafted is not None else None
                work = work.resize(final, Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)
            transpose = _TRANSPOSE.get(pending or 1)
            if transpose is not None:
                work = work.transpose(Image.Transpose[transpose])
            out = _for_output(work, params.format)
            ctx.progress(0.8, "resized")
            ctx.check_cancelled()

            writer, content_type, options = _WRITERS[params.format]
            icc = _icc_profile(source_mode, out, im.info)
            out.info = {}  # writers fall back to the source's metadata (EXIF, ICC, XMP): none of it
            if icc is not None:
                options = {**options, "icc_profile": icc}
            target = ctx.output_dir / f"thumbnail.{_EXTENSIONS[params.format]}"
            out.save(target, writer, **options)
        ctx.progress(1.0, "saved")
        upright = (stored[1], stored[0]) if (pending or 1) >= 5 else stored
        orientation = pending or (tiff_tag if isinstance(tiff_tag, int) and 1 <= tiff_tag <= 8 else None)
        stem = Path(ctx.file_name).stem.strip() or "image"
        return Output(
            result={
                "original": {
                    "width": upright[0],
                    "height": upright[1],
                    "format": im.format,
                    "mode": source_mode,
                    "animated": animated,
                },
                "thumbnail": {
                    "width": out.width,
                    "height": out.height,
                    "format": params.format,
                    "mode": out.mode,
                    "bytes": target.stat().st_size,
                },
                "exif_orientation": orientation,
                "orientation_applied": orientation is not None and orientation != 1,
            },
            file=target,
            file_name=f"{stem}.thumb.{_EXTENSIONS[params.format]}",
            content_type=content_type,
        )
