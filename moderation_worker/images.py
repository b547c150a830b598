"""Bytes in, a small RGB picture out: the image stage between the S3 fetch and the scorer.

``decode_image`` turns untrusted bytes into what the model sees, or raises ``PermanentError`` with a
stable dead-letter code: ``not_an_image``, ``unsupported_image``, ``decompression_bomb`` or
``corrupt_image``. The same bytes always give the same answer, so none of these is worth a retry.

Only the allowed formats' plugins parse the bytes for decoding. The other plugins see them only when
none of those accepted the data, to name the format in the message; they never decode pixels.
Pixel counts are checked from the header, before any pixel is decoded.

Thread safety: decoding runs in a thread pool, so nothing here writes process-wide state.
``Image.MAX_IMAGE_PIXELS`` and ``ImageFile.LOAD_TRUNCATED_IMAGES`` are only read, and the warning
filters are left alone: ``warnings.catch_warnings`` swaps the process-wide filter list on entry and
restores it on exit (before Python 3.14), so two pool threads interleaving enter/exit can leave the
other's filters installed for good. Pillow's ``DecompressionBombWarning`` is turned into our error
by policy instead: Pillow warns only above ``Image.MAX_IMAGE_PIXELS``, and our own header check
rejects everything above ``min(max_pixels, Image.MAX_IMAGE_PIXELS)``, so every image Pillow warns
about is rejected as ``decompression_bomb``. Where a process makes that warning an exception
(``-W error``), it is caught and mapped the same way.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache

from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from moderation_worker import png_chunks
from moderation_worker.errors import ErrorCode, PermanentError

# Register every plugin now, once: Image.open would otherwise import them lazily from whichever
# pool thread gets there first, and the "which format is this?" message needs the full registry.
Image.init()

DEFAULT_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

# Fully transparent pixels carry arbitrary (often black, sometimes leftover or deliberately hidden)
# colour values. Compositing over one fixed colour makes the model see what a viewer sees. Mid-grey
# rather than white or black keeps both dark and light drawings on transparency visible.
BACKGROUND: tuple[int, int, int] = (128, 128, 128)

# Bump when decoding changes the pixels in a way the named parameters below do not capture
# (conversion rules, draft use, orientation handling); cached features and verdicts then miss.
PREPROCESSING_VERSION = 1

# Lanczos: the best-quality downsampling filter Pillow has (sharp, little aliasing). A reducing gap
# of 3 first box-reduces by an integer factor, which Pillow documents as indistinguishable from a
# full Lanczos pass in most cases, at a fraction of the cost on large photos.
_RESAMPLE = Image.Resampling.LANCZOS
_REDUCING_GAP = 3.0

# The EXIF orientation tag says how to turn the stored pixels to display them upright; the same
# table as ImageOps.exif_transpose. Applied after shrinking, so only the small image is rotated.
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WIDE_GRAY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})

# Image containers Pillow cannot open. Without this they would be reported as "not an image",
# which sends whoever reads the dead-letter topic in the wrong direction (an iPhone HEIC is a photo).
_ISO_BMFF_IMAGE_BRANDS: dict[bytes, str] = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"hevx": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
}
_JPEG_XL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


@dataclass(frozen=True, eq=False)  # eq=False: comparing two of these must not compare pixels
class DecodedImage:
    """An image ready for the scorer, plus what is known about the object it came from."""

    image: Image.Image  # RGB, upright, longest edge at most max_edge
    format: str  # Pillow's name for the container, e.g. "JPEG", "PNG", "MPO"
    width: int  # of the original, upright (after EXIF orientation)
    height: int
    byte_size: int
    sha256: str  # hex digest of the bytes
    frames: int  # 1 for still images; only the first frame is decoded
    preprocessing_key: str
    metadata_dropped: tuple[str, ...] = ()  # PNG chunks left out because Pillow refused their size

    @property
    def cache_key(self) -> str:
        """Identifies ``image``: same bytes and same preprocessing give the same pixels."""
        return f"{self.sha256}:{self.preprocessing_key}"


def preprocessing_key(max_edge: int) -> str:
    """Everything besides the bytes that decides the pixels the scorer sees."""
    r, g, b = BACKGROUND
    return (
        f"v{PREPROCESSING_VERSION}:max_edge={max_edge}:{_RESAMPLE.name.lower()}"
        f":gap={_REDUCING_GAP:g}:bg={r:02x}{g:02x}{b:02x}"
    )


def image_cache_key(sha256: str, max_edge: int) -> str:
    """The ``cache_key`` the bytes with this digest will decode to; usable before decoding."""
    return f"{sha256}:{preprocessing_key(max_edge)}"


def decode_image(
    data: bytes,
    *,
    max_edge: int = 1024,
    max_pixels: int = 50_000_000,
    allowed_formats: frozenset[str] = DEFAULT_FORMATS,
    sha256: str | None = None,
) -> DecodedImage:
    """Decode the first frame of ``data`` to an upright RGB image no larger than ``max_edge``.

    Raises ``PermanentError`` for bytes that are not an allowed, intact image of at most
    ``max_pixels`` pixels, and ``ValueError`` for bad arguments. ``sha256``: the bytes' hex digest,
    when the caller has it already (it is computed otherwise).
    """
    if max_edge < 1 or max_pixels < 1:
        raise ValueError(f"max_edge and max_pixels must be positive, got {max_edge} and {max_pixels}")
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    try:
        return _decode(data, max_edge, max_pixels, allowed_formats, sha256)
    except PermanentError as exc:
        if not (png_chunks.is_png(data) and _OVERSIZED_METADATA in exc.message):
            raise
        # Pixels fine, metadata over Pillow's text-chunk guard: decode without the metadata.
        stripped, removed = png_chunks.without_metadata(data)
        if not removed:
            raise
        decoded = _decode(stripped, max_edge, max_pixels, allowed_formats, sha256)
        return replace(decoded, byte_size=len(data), metadata_dropped=tuple(removed))


def _decode(
    data: bytes, max_edge: int, max_pixels: int, allowed_formats: frozenset[str], sha256: str
) -> DecodedImage:
    formats = _pillow_formats(allowed_formats)
    with _open(data, formats, max_pixels) as im:
        stored_size = im.size
        target = _fit(stored_size, max_edge)
        with _decoding(im.format):
            frames = getattr(im, "n_frames", 1)
            box = _draft(im, target)
            im.load()  # the full decode, so truncation and corruption surface here
        orientation = _orientation(im)
        image = _shrink(_to_rgb(im), target, box)
        image = image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else image
        if image is im:  # nothing to do: copy so the result does not hold the parser and its buffer
            image = im.copy()
    width, height = stored_size[::-1] if orientation in _SWAPS_AXES else stored_size
    return DecodedImage(
        image=image,
        format=str(im.format),
        width=width,
        height=height,
        byte_size=len(data),
        sha256=sha256,
        frames=frames,
        preprocessing_key=preprocessing_key(max_edge),
    )


# --- identifying the format ------------------------------------------------------------------

_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# What Pillow's PNG plugin says of text or ICC chunks over MAX_TEXT_CHUNK (Pillow 11 to 13).
_OVERSIZED_METADATA = "too large for PngImagePlugin.MAX_TEXT_CHUNK"


@cache
def _pillow_formats(allowed: frozenset[str]) -> tuple[str, ...]:
    formats = tuple(sorted(name.upper() for name in allowed))
    unknown = [name for name in formats if name not in Image.OPEN]
    if unknown:
        raise ValueError(f"allowed_formats {unknown} are not formats this Pillow can open")
    if not formats:
        raise ValueError("allowed_formats is empty")
    return formats


def _open(data: bytes, formats: tuple[str, ...], max_pixels: int) -> ImageFile.ImageFile:
    """Parse the header with the allowed plugins only and check its size; no pixels are decoded."""
    claimed = _claimed_format(data, formats)
    try:
        im = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise _unidentified(data, formats, claimed) from None
    except MemoryError:
        raise
    except Exception as exc:
        raise _open_failure(data, claimed, max_pixels, exc) from exc
    limit = _pixel_limit(max_pixels)
    if im.width * im.height > limit:
        im.close()
        raise _too_many_pixels(im.format, im.size, limit)
    return im


def _open_failure(data: bytes, fmt: str | None, max_pixels: int, exc: Exception) -> PermanentError:
    if isinstance(exc, _BOMB_ERRORS) and fmt:
        # Pillow's own limit fired inside Image.open, before we could see the size: parse the
        # header once more without it, so that the message can give the dimensions.
        size, _ = _probe_header(data, fmt)
        if size:
            return _too_many_pixels(fmt, size, _pixel_limit(max_pixels))
    return _as_permanent(exc, fmt or "image")


def _unidentified(data: bytes, formats: tuple[str, ...], claimed: str | None) -> PermanentError:
    """Say why no allowed plugin accepted the data, as precisely as the first bytes allow."""
    allowed = ", ".join(formats)
    if not data:
        return PermanentError(ErrorCode.NOT_AN_IMAGE, f"the object is empty; expected one of {allowed}")
    if claimed:
        _, reason = _probe_header(data, claimed)
        return PermanentError(
            ErrorCode.CORRUPT_IMAGE,
            f"the data starts like a {claimed} file but its header cannot be read ({reason}); "
            f"it is truncated, corrupt or a {claimed} variant Pillow cannot decode",
        )
    other = _other_format(data)
    if other:
        return PermanentError(
            ErrorCode.UNSUPPORTED_IMAGE, f"image format {other} is not accepted; allowed formats: {allowed}"
        )
    return PermanentError(
        ErrorCode.NOT_AN_IMAGE,
        f"{len(data)} bytes that are not a recognised image ({_describe_start(data)}); "
        f"expected one of {allowed}",
    )


def _claimed_format(data: bytes, formats: tuple[str, ...]) -> str | None:
    """The allowed format whose signature the data starts with, whether or not the rest is intact."""
    prefix = data[:16]  # what Image.open shows the plugins' accept functions
    for name in formats:
        accept = Image.OPEN[name][1]
        result = accept(prefix) if accept else False
        if result and not isinstance(result, str):  # a str is Pillow's "nearly, but no, because"
            return name
    return None


def _probe_header(data: bytes, fmt: str) -> tuple[tuple[int, int] | None, str]:
    """Run one plugin's header parser the way Image.open does, minus Pillow's pixel limit and minus
    swallowing the parser's error. Only ever called to explain why Image.open failed."""
    factory = Image.OPEN[fmt][0]
    try:
        with factory(io.BytesIO(data), "") as im:
            return im.size, ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _other_format(data: bytes) -> str | None:
    """The name of an image format outside the allowlist, for the message; never decodes pixels."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return str(im.format)
    except _BOMB_ERRORS as exc:
        raise PermanentError(ErrorCode.DECOMPRESSION_BOMB, f"image in a format not allowed: {exc}") from exc
    except Exception:  # no plugin could parse a header: nothing Pillow can name
        return _undecodable_format(data)


def _undecodable_format(data: bytes) -> str | None:
    if data[4:8] == b"ftyp" and data[8:12] in _ISO_BMFF_IMAGE_BRANDS:
        return _ISO_BMFF_IMAGE_BRANDS[data[8:12]]
    if data.startswith(_JPEG_XL_SIGNATURES):
        return "JPEG XL"
    return None


def _describe_start(data: bytes) -> str:
    """What the first bytes look like: readable text as text (e.g. '%PDF-1.7'), otherwise hex."""
    head = data[:16]
    printable = len(head) - len(head.lstrip(bytes(range(32, 127))))
    if printable >= 4:
        return f"starts with {head[:printable].decode('ascii')!r}"
    return f"starts with bytes {data[:8].hex(' ')}"


# --- decoding --------------------------------------------------------------------------------


def _pixel_limit(max_pixels: int) -> int:
    # Pillow's own limit still applies (read, never written): raising it is a process-wide decision
    # made at start-up. Honouring it here is what turns Pillow's warning into our error.
    return min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)


def _too_many_pixels(fmt: str | None, size: tuple[int, int], limit: int) -> PermanentError:
    width, height = size
    return PermanentError(
        ErrorCode.DECOMPRESSION_BOMB,
        f"{fmt} image is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,}; "
        "downscale it before upload",
    )


@contextmanager
def _decoding(fmt: str | None) -> Iterator[None]:
    """Map what Pillow raises while decoding hostile or damaged bytes to dead-letter codes."""
    try:
        yield
    except MemoryError:
        raise  # this worker being short of memory says nothing about the bytes
    except Exception as exc:
        raise _as_permanent(exc, fmt) from exc


def _as_permanent(exc: Exception, fmt: str | None) -> PermanentError:
    if isinstance(exc, _BOMB_ERRORS):
        return PermanentError(ErrorCode.DECOMPRESSION_BOMB, f"{fmt} image: {exc}")
    # Pillow's plugins raise an open set of types on malformed data (OSError, SyntaxError,
    # ValueError, EOFError, struct.error, IndexError, ...). Only Pillow calls run in the guarded
    # blocks, so whatever they raise is a property of these bytes and would recur on a retry.
    return PermanentError(
        ErrorCode.CORRUPT_IMAGE, f"{fmt} data is truncated or corrupt ({type(exc).__name__}: {exc})"
    )


def _fit(size: tuple[int, int], max_edge: int) -> tuple[int, int]:
    """Scale ``size`` down (never up) so that its longer edge is ``max_edge``, keeping the aspect."""
    width, height = size
    scale = max_edge / max(width, height)
    if scale >= 1:
        return size
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draft(im: ImageFile.ImageFile, target: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """Let the decoder produce a reduced image directly (JPEG: 1/2, 1/4, 1/8 scale in the DCT).

    Pillow promises a drafted size at least the requested one, so the final resize still only
    shrinks. Returns the box of the drafted image that covers the original, for an exact resize.
    """
    if target == im.size:
        return None
    drafted = im.draft(None, target)  # a no-op returning None for formats other than JPEG
    return drafted[1] if drafted else None


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # unreadable EXIF: show the pixels as stored, as browsers do
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _shrink(
    im: Image.Image, target: tuple[int, int], box: tuple[float, float, float, float] | None
) -> Image.Image:
    if im.size == target and box is None:
        return im
    return im.resize(target, _RESAMPLE, box=box, reducing_gap=_REDUCING_GAP)


# --- colour ----------------------------------------------------------------------------------


def _to_rgb(im: Image.Image) -> Image.Image:
    """Every mode to 8-bit RGB; returns ``im`` itself when it already is (no full-size copy)."""
    if im.mode in _WIDE_GRAY_MODES:
        return _wide_gray_to_l(im).convert("RGB")
    try:
        if im.mode in _ALPHA_MODES or "transparency" in im.info:
            return _flatten(im.convert("RGBA"))  # also applies palette and tRNS transparency
        return im if im.mode == "RGB" else im.convert("RGB")
    except ValueError as exc:  # a mode Pillow has no conversion for, e.g. "La"
        raise PermanentError(
            ErrorCode.UNSUPPORTED_IMAGE, f"colour mode {im.mode} cannot be converted to RGB: {exc}"
        ) from exc


def _flatten(rgba: Image.Image) -> Image.Image:
    """Composite over BACKGROUND (see there for why) instead of dropping the alpha channel."""
    flat = Image.new("RGB", rgba.size, BACKGROUND)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _wide_gray_to_l(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit and float grayscale to 8 bits; a plain convert("L") clips them.

    Integers are read as 16-bit samples (0..65535) and floats as 0..1, the nominal ranges of the
    formats that produce them. Data outside that range (scientific TIFFs) is stretched from its
    own minimum and maximum instead, so it does not come out as a white or black sheet.
    """
    nominal_max = 1.0 if im.mode == "F" else 65535.0
    wide = im if im.mode == "F" else im.convert("I")  # one path for every 16-bit byte order
    low, high = wide.getextrema()
    if low >= 0 and high <= nominal_max:
        low, high = 0, nominal_max
    scale = 255 / (high - low) if high > low else 0.0
    offset = 0.5 - low * scale  # + 0.5: Pillow truncates, this rounds
    return wide.point(lambda v: v * scale + offset).convert("L")
