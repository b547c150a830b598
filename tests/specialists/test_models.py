"""The real models on real and synthetic images: OCR, nudity, PDQ."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageOps

from moderation_worker.specialists.hash_match import (
    HashListError,
    HashListFile,
    HashMatchSpecialist,
    pdq_hex,
)
from moderation_worker.specialists.nudity import NUDITY, NuditySpecialist
from moderation_worker.specialists.ocr import PERSONAL_DATA, OcrSpecialist

from .conftest import screenshot

CARD_NUMBER = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def ocr() -> OcrSpecialist:
    return OcrSpecialist()


def test_ocr_reads_a_card_number_an_address_a_price_and_small_grey_text(ocr):
    page = screenshot(
        [
            (f"Card: {CARD_NUMBER}", 28, (0, 0, 0)),
            ("Contact: jane.doe@example.com", 28, (0, 0, 0)),
            ("Price: $19.99 only today", 28, (0, 0, 0)),
            ("terms apply, see store for details", 12, (150, 150, 150)),
        ]
    )
    lines = [text for text, _ in ocr.read_lines(page)]
    assert any("19.99" in line for line in lines)
    assert any("store for details" in line for line in lines), lines
    analysis = ocr.analyse(page)
    signal = analysis.signal(PERSONAL_DATA)
    assert signal.value == 1.0
    assert "payment_card: **** **** **** 1111" in signal.evidence
    assert "email: j***@example.com" in signal.evidence
    shown = repr(analysis)
    assert CARD_NUMBER not in shown and CARD_NUMBER.replace(" ", "") not in shown and "jane.doe" not in shown
    assert "$19.99" in analysis.details["text"]


def test_ocr_of_a_near_miss_card_number_signals_nothing(ocr):
    analysis = ocr.analyse(screenshot([("Card: 4111 1111 1111 1112", 28, (0, 0, 0))]))
    assert analysis.signal(PERSONAL_DATA).value == 0.0
    assert "1112" in analysis.details["text"]  # read, and not mistaken for a card


def test_ocr_text_is_bounded():
    bounded = OcrSpecialist(max_chars=20)
    analysis = bounded.analyse(screenshot([("A long line of plain words to read here", 28, (0, 0, 0))]))
    assert len(analysis.details["text"]) <= 20 and analysis.details["truncated"]


def test_nudity_scores_the_sample_photos_low(photos):
    nudity = NuditySpecialist()
    scores = {name: nudity.analyse(image).signal(NUDITY).value for name, image in photos.items()}
    assert all(0.0 <= score < 0.2 for score in scores.values()), scores


def _recompressed(image: Image.Image, scale: float, quality: int) -> Image.Image:
    small = image.resize((int(image.width * scale), int(image.height * scale)))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _write_list(path, rows):
    path.write_text("hash,policy,label,source\n" + "".join(f"{r}\n" for r in rows))


def test_pdq_matches_resized_recompressed_and_mirrored_copies_and_not_another_photo(tmp_path, photos):
    known = photos["astronaut.png"]
    _write_list(tmp_path / "known.csv", [f"{pdq_hex(known)},graphic_violence,known-bad-1,test-list"])
    matcher = HashMatchSpecialist(HashListFile(tmp_path / "known.csv"))

    copy = matcher.match(_recompressed(known, 0.5, 60))
    assert copy is not None and copy.distance <= 31 and copy.policy == "graphic_violence"
    assert copy.label == "known-bad-1" and copy.list == "known.csv"
    assert matcher.match(ImageOps.mirror(known)) is not None
    assert matcher.match(known.rotate(90, expand=True)) is not None
    for name in ("coffee.png", "chelsea.png", "camera.png"):
        assert matcher.match(photos[name]) is None, name
    # A flat image hashes with quality 0: never a match, whatever the list holds.
    assert matcher.match(Image.new("RGB", (300, 300), (120, 120, 120))) is None


def test_a_malformed_list_is_refused_and_the_previous_list_stays_in_force(tmp_path, photos):
    path = tmp_path / "list.csv"
    known = photos["astronaut.png"]
    _write_list(path, [f"{pdq_hex(known)},graphic_violence,first,test"])
    hashes = HashListFile(path, check_every_s=0)
    matcher = HashMatchSpecialist(hashes)
    first_version = matcher.version
    assert matcher.match(known).label == "first"

    _write_list(path, ["not-a-hash,graphic_violence,broken,test"])
    assert matcher.match(known).label == "first", "a bad list must not switch matching off"
    assert matcher.version == first_version

    _write_list(path, [f"{pdq_hex(photos['coffee.png'])},weapons,second,test"])
    assert matcher.match(known) is None and matcher.match(photos["coffee.png"]).label == "second"
    assert matcher.version != first_version, "a new list is a new cache key"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("hash,label\n", "header"),
        ("hash,policy,label,source\nabcd,weapons,x,y\n", "64 hex digits"),
        ("hash,policy,label,source\n" + "0" * 64 + ",weapons,x\n", "3 columns"),
        ("hash,policy,label,source\n" + "0" * 64 + ",lasers,x,y\n", "no policy 'lasers'"),
    ],
)
def test_a_list_that_does_not_parse_at_start_is_an_error_naming_the_line(tmp_path, content, reason):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(HashListError, match=reason):
        HashListFile(path, known_policies=frozenset({"weapons"}))
