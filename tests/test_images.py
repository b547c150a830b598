"""decode_image: every input is generated here with Pillow, or read from scikit-image's sample photos."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib.resources import files

import pytest
from PIL import Image, ImageChops, ImageFile, ImageStat, JpegImagePlugin

from moderation_worker.errors import ErrorCode, PermanentError
from moderation_worker.images import (
    BACKGROUND,
    DecodedImage,
    decode_image,
    image_cache_key,
    preprocessing_key,
)
from moderation_worker.samples import decompression_bomb_png

SAMPLE_PHOTOS = files("skimage") / "data"


# --- helpers ---------------------------------------------------------------------------------


@cache
def _photo_bytes(name: str) -> bytes:
    return (SAMPLE_PHOTOS / f"{name}.png").read_bytes()


def photo(name: str) -> Image.Image:
    """A scikit-image sample photo, e.g. "astronaut" (512x512), "chelsea" (451x300), "coffee" (600x400)."""
    with Image.open(io.BytesIO(_photo_bytes(name))) as im:
        return im.convert("RGB")


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def rejection(data: bytes, **options: object) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        decode_image(data, **options)
    return caught.value


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything decodes pixels (the header alone must decide)."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- not_an_image / unsupported_image ----------------------------------------------------------


def test_a_pdf_is_not_an_image_and_the_message_shows_how_it_starts() -> None:
    error = rejection(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << >> endobj\n")

    assert error.code is ErrorCode.NOT_AN_IMAGE
    assert "starts with '%PDF-1.7'" in error.message
    assert "JPEG" in error.message  # says what would have been accepted


def test_binary_junk_is_not_an_image_and_is_described_in_hex_not_dumped() -> None:
    junk = random.Random(7).randbytes(4096)

    error = rejection(junk)

    assert error.code is ErrorCode.NOT_AN_IMAGE
    assert f"starts with bytes {junk[:8].hex(' ')}" in error.message
    assert len(error.message) < 200


def test_empty_bytes_are_not_an_image() -> None:
    error = rejection(b"")

    assert error.code is ErrorCode.NOT_AN_IMAGE
    assert "empty" in error.message


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "PCX", "TGA"])
def test_a_format_pillow_reads_but_the_allowlist_excludes_is_unsupported(fmt: str) -> None:
    data = encode(photo("chelsea").resize((64, 48)), fmt)

    error = rejection(data)

    assert error.code is ErrorCode.UNSUPPORTED_IMAGE
    assert f"format {fmt} is not accepted" in error.message
    assert "BMP, GIF, JPEG, PNG, TIFF, WEBP" in error.message


def test_a_png_is_unsupported_when_the_allowlist_leaves_png_out() -> None:
    error = rejection(_photo_bytes("coffee"), allowed_formats=frozenset({"JPEG"}))

    assert error.code is ErrorCode.UNSUPPORTED_IMAGE
    assert "format PNG is not accepted; allowed formats: JPEG" in error.message


def test_an_iphone_heic_is_unsupported_rather_than_not_an_image() -> None:
    # Pillow has no HEIF plugin; the ISO-BMFF "ftyp" box names the brand.
    heic_start = struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + bytes(64)

    error = rejection(heic_start)

    assert error.code is ErrorCode.UNSUPPORTED_IMAGE
    assert "HEIC" in error.message


def test_a_format_name_pillow_does_not_know_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="JPG"):
        decode_image(_photo_bytes("coffee"), allowed_formats=frozenset({"JPG", "PNG"}))


def test_a_max_edge_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_edge"):
        decode_image(_photo_bytes("coffee"), max_edge=0)


# --- decompression_bomb ------------------------------------------------------------------------


def test_a_png_header_claiming_100k_by_100k_pixels_is_a_bomb_without_decoding_pixels(
    no_pixel_decoding: None,
) -> None:
    error = rejection(decompression_bomb_png(100_000, 100_000))

    assert error.code is ErrorCode.DECOMPRESSION_BOMB
    assert "100000x100000" in error.message
    assert "10,000,000,000 pixels" in error.message


def test_an_image_over_max_pixels_is_a_bomb_even_below_pillows_own_limit(no_pixel_decoding: None) -> None:
    assert Image.MAX_IMAGE_PIXELS > 60_000_000  # so only our default of 50M can catch it

    error = rejection(decompression_bomb_png(10_000, 6_000))

    assert error.code is ErrorCode.DECOMPRESSION_BOMB
    assert "10000x6000" in error.message
    assert "limit of 50,000,000" in error.message


def test_a_real_photo_over_a_lowered_max_pixels_is_a_bomb() -> None:
    error = rejection(_photo_bytes("astronaut"), max_pixels=512 * 512 - 1)

    assert error.code is ErrorCode.DECOMPRESSION_BOMB
    assert "512x512" in error.message


def test_pillows_limit_still_applies_when_max_pixels_is_raised_above_it() -> None:
    # 10^8 pixels: above Image.MAX_IMAGE_PIXELS (~89M), below its hard error at twice that.
    with pytest.warns(Image.DecompressionBombWarning):
        error = rejection(decompression_bomb_png(10_000, 10_000), max_pixels=10**9)

    assert error.code is ErrorCode.DECOMPRESSION_BOMB
    assert f"limit of {Image.MAX_IMAGE_PIXELS:,}" in error.message


def test_pillows_bomb_warning_raised_as_an_exception_becomes_decompression_bomb() -> None:
    # As in a process run with -W error; single-threaded test, so catch_warnings is safe here.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        error = rejection(decompression_bomb_png(10_000, 10_000), max_pixels=10**9)

    assert error.code is ErrorCode.DECOMPRESSION_BOMB
    assert "10000x10000" in error.message


# --- corrupt_image -----------------------------------------------------------------------------


def _flip_byte(data: bytes, index: int) -> bytes:
    damaged = bytearray(data)
    damaged[index] ^= 0xFF
    return bytes(damaged)


def _truncated(fmt: str) -> Callable[[], bytes]:
    def make() -> bytes:
        data = encode(photo("astronaut"), fmt)
        return data[: len(data) // 2]

    return make


def _png_with_bad_ihdr_crc() -> bytes:
    return _flip_byte(encode(photo("chelsea"), "PNG"), 8 + 4 + 4 + 13)  # first byte of the IHDR CRC


def _png_with_damaged_idat() -> bytes:
    data = encode(photo("chelsea"), "PNG")
    return _flip_byte(data, data.index(b"IDAT") + 200)


def _png_header_then_garbage() -> bytes:
    return encode(photo("chelsea"), "PNG")[:33] + random.Random(1).randbytes(5000)  # signature + IHDR


def _jpeg_header_then_garbage() -> bytes:
    return encode(photo("chelsea"), "JPEG")[:200] + random.Random(2).randbytes(5000)


@pytest.mark.parametrize(
    ("make", "fmt"),
    [
        pytest.param(_truncated("JPEG"), "JPEG", id="truncated-jpeg"),
        pytest.param(_truncated("PNG"), "PNG", id="truncated-png"),
        pytest.param(_truncated("GIF"), "GIF", id="truncated-gif"),
        pytest.param(_truncated("TIFF"), "TIFF", id="truncated-tiff"),
        pytest.param(_truncated("WEBP"), "WEBP", id="truncated-webp"),
        pytest.param(_truncated("BMP"), "BMP", id="truncated-bmp"),
        pytest.param(_png_with_bad_ihdr_crc, "PNG", id="png-bad-header-crc"),
        pytest.param(_png_with_damaged_idat, "PNG", id="png-damaged-pixel-data"),
        pytest.param(_png_header_then_garbage, "PNG", id="png-header-then-garbage"),
        pytest.param(_jpeg_header_then_garbage, "JPEG", id="jpeg-header-then-garbage"),
        pytest.param(lambda: b"\x89PNG\r\n\x1a\n", "PNG", id="png-signature-only"),
    ],
)
def test_truncated_or_damaged_data_is_a_corrupt_image_naming_its_format(
    make: Callable[[], bytes], fmt: str
) -> None:
    error = rejection(make())

    assert error.code is ErrorCode.CORRUPT_IMAGE
    assert fmt in error.message


def test_a_corrupt_header_message_carries_pillows_reason() -> None:
    error = rejection(_png_with_bad_ihdr_crc())

    assert "bad header checksum" in error.message


def test_truncated_images_are_never_loaded_leniently() -> None:
    rejection(_truncated("JPEG")())

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- colour modes ------------------------------------------------------------------------------


def _solid(mode: str, colour: object, fmt: str, **params: object) -> Callable[[], bytes]:
    return lambda: encode(Image.new(mode, (8, 6), colour), fmt, **params)


def _palette(transparent: bool, fmt: str) -> Callable[[], bytes]:
    def make() -> bytes:
        im = Image.new("P", (8, 6), 1)
        im.putpalette([255, 0, 0, 0, 0, 255])  # index 0 red, index 1 blue
        return encode(im, fmt, **({"transparency": 1} if transparent else {}))

    return make


def _ycbcr_of(rgb: tuple[int, int, int]) -> Callable[[], bytes]:
    return lambda: encode(Image.new("RGB", (8, 6), rgb).convert("YCbCr"), "TIFF")


@pytest.mark.parametrize(
    ("make", "expected", "tolerance"),
    [
        pytest.param(_solid("L", 200, "PNG"), (200, 200, 200), 0, id="L"),
        pytest.param(_solid("1", 1, "PNG"), (255, 255, 255), 0, id="1-white"),
        pytest.param(_palette(False, "PNG"), (0, 0, 255), 0, id="P"),
        pytest.param(_palette(True, "PNG"), BACKGROUND, 0, id="P-transparent-index-png"),
        pytest.param(_palette(True, "GIF"), BACKGROUND, 0, id="P-transparent-index-gif"),
        pytest.param(_solid("LA", (77, 255), "PNG"), (77, 77, 77), 0, id="LA-opaque"),
        pytest.param(_solid("LA", (255, 0), "PNG"), BACKGROUND, 0, id="LA-transparent"),
        pytest.param(_solid("RGBA", (255, 0, 0, 0), "PNG"), BACKGROUND, 0, id="RGBA-hidden-red"),
        pytest.param(_solid("RGBA", (255, 0, 0, 255), "PNG"), (255, 0, 0), 0, id="RGBA-opaque"),
        pytest.param(_solid("RGBA", (255, 0, 0, 128), "PNG"), (192, 64, 64), 1, id="RGBA-half"),
        pytest.param(_solid("RGBA", (0, 255, 0, 0), "WEBP", lossless=True), BACKGROUND, 0, id="RGBA-webp"),
        pytest.param(_solid("L", 5, "PNG", transparency=5), BACKGROUND, 0, id="L-colour-key"),
        pytest.param(_solid("RGB", (9, 9, 9), "PNG", transparency=(9, 9, 9)), BACKGROUND, 0, id="RGB-key"),
        pytest.param(_solid("CMYK", (0, 0, 0, 0), "JPEG"), (255, 255, 255), 2, id="CMYK-white-jpeg"),
        pytest.param(_solid("CMYK", (0, 0, 0, 255), "TIFF"), (0, 0, 0), 0, id="CMYK-black-tiff"),
        pytest.param(_solid("CMYK", (255, 0, 0, 0), "TIFF"), (0, 255, 255), 0, id="CMYK-cyan-tiff"),
        pytest.param(_ycbcr_of((200, 100, 50)), (200, 100, 50), 3, id="YCbCr"),
        pytest.param(_solid("LAB", (128, 128, 128), "TIFF"), (119, 119, 119), 2, id="LAB-mid-grey"),
        pytest.param(_solid("I;16", 32768, "PNG"), (128, 128, 128), 1, id="I;16-mid-png"),
        pytest.param(_solid("I;16", 65535, "PNG"), (255, 255, 255), 0, id="I;16-max-png"),
        pytest.param(_solid("I;16", 32768, "TIFF"), (128, 128, 128), 1, id="I;16-mid-tiff"),
        pytest.param(_solid("I;16B", 32768, "TIFF"), (128, 128, 128), 1, id="I;16B-mid-tiff"),
        pytest.param(_solid("I", 32768, "TIFF"), (128, 128, 128), 1, id="I-mid-tiff"),
        pytest.param(_solid("F", 0.5, "TIFF"), (128, 128, 128), 1, id="F-half-tiff"),
    ],
)
def test_every_mode_converts_to_rgb_with_sensible_values(
    make: Callable[[], bytes], expected: tuple[int, int, int], tolerance: int
) -> None:
    decoded = decode_image(make())

    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (8, 6)
    assert close_to(decoded.image.getpixel((4, 3)), expected, tolerance)


def test_sixteen_bit_gray_is_scaled_across_its_range_not_clipped() -> None:
    ramp = Image.new("I;16", (5, 1))
    for x, value in enumerate([0, 16384, 32768, 49152, 65535]):
        ramp.putpixel((x, 0), value)

    decoded = decode_image(encode(ramp, "PNG"))

    assert [decoded.image.getpixel((x, 0))[0] for x in range(5)] == [0, 64, 128, 191, 255]


def test_float_gray_outside_zero_to_one_is_stretched_rather_than_clipped() -> None:
    ramp = Image.new("F", (3, 1))
    for x, value in enumerate([-1000.0, 0.0, 1000.0]):
        ramp.putpixel((x, 0), value)

    decoded = decode_image(encode(ramp, "TIFF"))

    assert [decoded.image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_a_grayscale_photo_becomes_rgb_with_equal_channels() -> None:
    decoded = decode_image(_photo_bytes("camera"))

    red, green, blue = decoded.image.split()
    assert decoded.image.mode == "RGB"
    assert ImageChops.difference(red, green).getbbox() is None
    assert ImageChops.difference(red, blue).getbbox() is None


# --- orientation -------------------------------------------------------------------------------


def _landscape_with_red_top_left() -> Image.Image:
    im = Image.new("RGB", (60, 40), "white")
    im.paste((255, 0, 0), (0, 0, 12, 12))
    return im


@pytest.mark.parametrize(
    ("orientation", "fmt", "marker"),
    [
        (6, "JPEG", (34, 5)),  # turned 90° clockwise: the stored top-left is now top-right
        (8, "JPEG", (5, 54)),  # turned 90° anticlockwise: the stored top-left is now bottom-left
        (6, "PNG", (34, 5)),
        (8, "WEBP", (5, 54)),
        (6, "TIFF", (34, 5)),
    ],
)
def test_exif_orientation_turns_the_image_upright(
    orientation: int, fmt: str, marker: tuple[int, int]
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation

    decoded = decode_image(encode(_landscape_with_red_top_left(), fmt, exif=exif))

    assert decoded.image.size == (40, 60)
    assert (decoded.width, decoded.height) == (40, 60)
    assert close_to(decoded.image.getpixel(marker), (255, 0, 0), 12)
    assert close_to(decoded.image.getpixel((5, 5)), (255, 255, 255), 12)  # white in both turns


def test_exif_orientation_is_applied_to_a_downscaled_photo() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6

    decoded = decode_image(encode(photo("chelsea"), "JPEG", exif=exif), max_edge=200)

    assert (decoded.width, decoded.height) == (300, 451)  # the original, upright
    assert decoded.image.size == (133, 200)


# --- frames ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "params"), [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})])
def test_an_animation_gives_its_first_frame_and_counts_all_frames(
    fmt: str, params: dict[str, object]
) -> None:
    red, green, blue = (Image.new("RGB", (40, 30), colour) for colour in ("red", "lime", "blue"))
    data = encode(red, fmt, save_all=True, append_images=[green, blue], duration=100, **params)

    decoded = decode_image(data)

    assert decoded.frames == 3
    assert decoded.image.getpixel((20, 15)) == (255, 0, 0)


def test_a_multi_page_tiff_gives_its_first_page() -> None:
    data = (SAMPLE_PHOTOS / "multipage.tif").read_bytes()
    with Image.open(io.BytesIO(data)) as tiff:
        first_page = tiff.convert("RGB")

    decoded = decode_image(data)

    assert decoded.frames == 2
    assert ImageChops.difference(decoded.image, first_page).getbbox() is None


def test_a_multi_picture_jpeg_from_a_camera_is_accepted_as_jpeg() -> None:
    left, right = photo("chelsea"), photo("chelsea").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    data = encode(left, "MPO", save_all=True, append_images=[right])

    decoded = decode_image(data, allowed_formats=frozenset({"JPEG"}))

    assert decoded.format == "MPO"
    assert decoded.frames == 2


# --- size --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "transpose", "max_edge", "expected"),
    [
        ("chelsea", False, 256, (256, 170)),  # 451x300
        ("coffee", False, 256, (256, 171)),  # 600x400
        ("coffee", True, 256, (171, 256)),  # 400x600, portrait
        ("astronaut", False, 100, (100, 100)),  # 512x512
        ("camera", False, 511, (511, 511)),  # 512x512, grayscale
    ],
)
def test_resizing_caps_the_long_edge_and_keeps_the_aspect_ratio(
    name: str, transpose: bool, max_edge: int, expected: tuple[int, int]
) -> None:
    original = photo(name).transpose(Image.Transpose.TRANSPOSE) if transpose else photo(name)

    decoded = decode_image(encode(original, "PNG"), max_edge=max_edge)

    assert decoded.image.size == expected
    assert (decoded.width, decoded.height) == original.size


def test_an_image_within_max_edge_is_neither_upscaled_nor_altered() -> None:
    decoded = decode_image(_photo_bytes("chelsea"), max_edge=1024)

    assert decoded.image.size == (451, 300)
    assert ImageChops.difference(decoded.image, photo("chelsea")).getbbox() is None


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    # Odd sizes on purpose, so that the draft scale does not divide them evenly.
    return encode(photo("astronaut").resize((4001, 2999), Image.Resampling.BILINEAR), "JPEG", quality=90)


@pytest.mark.parametrize("max_edge", [500, 1024, 1999])
def test_a_large_jpeg_decoded_at_reduced_scale_matches_a_full_decode(
    large_jpeg: bytes, max_edge: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    drafted_sizes: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        result = real_draft(self, mode, size)
        drafted_sizes.append(self.size)
        return result

    def no_draft(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> None:
        return None

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    drafted = decode_image(large_jpeg, max_edge=max_edge)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", no_draft)
    undrafted = decode_image(large_jpeg, max_edge=max_edge)

    assert drafted.image.size == undrafted.image.size
    assert max(drafted.image.size) == max_edge
    (reduced,) = drafted_sizes
    assert max_edge <= max(reduced) < 4001  # decoded smaller, yet never below the target
    mean_difference = ImageStat.Stat(ImageChops.difference(drafted.image, undrafted.image)).mean
    assert max(mean_difference) < 2.0  # per channel, out of 255


# --- identity ----------------------------------------------------------------------------------


def test_sha256_and_byte_size_describe_the_exact_bytes() -> None:
    data = encode(photo("coffee"), "JPEG")

    decoded = decode_image(data)

    assert decoded.format == "JPEG"
    assert decoded.byte_size == len(data)
    assert decoded.sha256 == hashlib.sha256(data).hexdigest()


def test_the_cache_key_is_known_before_decoding_and_changes_with_the_preprocessing() -> None:
    data = _photo_bytes("coffee")

    small, large = decode_image(data, max_edge=256), decode_image(data, max_edge=512)

    assert small.cache_key == image_cache_key(small.sha256, 256)
    assert small.preprocessing_key == preprocessing_key(256)
    assert small.sha256 == large.sha256
    assert small.cache_key != large.cache_key


def test_a_decoded_image_is_frozen_and_detached_from_the_parser() -> None:
    decoded = decode_image(_photo_bytes("chelsea"))

    assert type(decoded.image) is Image.Image  # not a PngImageFile holding the buffer
    with pytest.raises(AttributeError):
        decoded.frames = 2
    assert isinstance(decoded, DecodedImage)


# --- concurrency -------------------------------------------------------------------------------


def test_decoding_in_a_thread_pool_is_consistent_and_leaves_global_settings_alone() -> None:
    inputs = [
        _photo_bytes("astronaut"),
        encode(photo("coffee"), "JPEG"),
        decompression_bomb_png(10_000, 6_000),
    ]
    expected = [decode_image(data).image.tobytes() for data in inputs[:2]]
    filters_before, limit_before = list(warnings.filters), Image.MAX_IMAGE_PIXELS

    def decode(data: bytes) -> bytes | ErrorCode:
        try:
            return decode_image(data, max_edge=1024).image.tobytes()
        except PermanentError as error:
            return error.code

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(decode, inputs * 16))

    assert results == [*expected, ErrorCode.DECOMPRESSION_BOMB] * 16
    assert warnings.filters == filters_before
    assert limit_before == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("kind", ["icc", "ztxt"])
def test_a_png_whose_metadata_is_over_pillows_text_chunk_limit_decodes_its_pixels(kind: str) -> None:
    # Given a valid PNG whose ICC profile or compressed text chunk decompresses past MAX_TEXT_CHUNK
    from PIL import PngImagePlugin

    from tests.hostile_records import png_with_oversized_metadata

    data = png_with_oversized_metadata(kind, size=(48, 32), colour=(200, 40, 90))
    limit = PngImagePlugin.MAX_TEXT_CHUNK

    decoded = decode_image(data)

    # I expect its pixels, the facts of the bytes as they came, the dropped chunk named, and Pillow's
    # guard left as it was (it protects every other image from text-chunk bombs)
    assert decoded.image.size == (48, 32) and decoded.image.getpixel((5, 5)) == (200, 40, 90)
    assert decoded.byte_size == len(data) and decoded.sha256 == hashlib.sha256(data).hexdigest()
    assert decoded.metadata_dropped == (("iCCP",) if kind == "icc" else ("zTXt",))
    assert limit == PngImagePlugin.MAX_TEXT_CHUNK


def test_a_png_with_oversized_metadata_and_broken_pixels_is_still_corrupt() -> None:
    from tests.hostile_records import png_with_oversized_metadata

    data = png_with_oversized_metadata("icc")
    broken = data[: data.index(b"IDAT") + 20] + b"\x00" * 40 + data[data.index(b"IEND") - 4 :]
    with pytest.raises(PermanentError) as caught:
        decode_image(broken)
    assert caught.value.code is ErrorCode.CORRUPT_IMAGE
