"""Section 8: the specialists, milliseconds per image on this machine, beside the VLM they stand next to.

Each specialist and the CPU benchmark model's ``score()`` (10 policies of the default pack, one image)
run interleaved on the same images: a 1280x960 photo (decoded and resized as the image stage would
for the model, at the model's 448 px) and a 900x360 screenshot with a card number, an address and a
price. The ratios say what a hash hit (the VLM skipped for the image) and a specialist-decided policy
(the VLM skipped for that policy) save against the VLM path.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from benchmarks import photos
from benchmarks.fixtures import Context, default_pack, load_scorer
from benchmarks.report import SectionResult, Table, fmt
from benchmarks.timing import interleaved, progress, ratio
from moderation_worker.model.base import ScoringRequest


def _screenshot() -> Image.Image:
    image = Image.new("RGB", (900, 360), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 28)
    except OSError:
        font = ImageFont.load_default(28)
    for row, text in enumerate(
        ["Card: 4111 1111 1111 1111", "Contact: jane.doe@example.com", "Price: $19.99"]
    ):
        draw.text((24, 20 + 56 * row), text, fill="black", font=font)
    return image


def run(ctx: Context) -> SectionResult:
    result = SectionResult(8, "specialists", "The specialists: milliseconds per image, beside the VLM")
    try:
        from moderation_worker.specialists.hash_match import HashListFile, HashMatchSpecialist, pdq_hex
        from moderation_worker.specialists.nudity import NuditySpecialist
        from moderation_worker.specialists.ocr import OcrSpecialist
    except ImportError as exc:
        result.skipped = f"the specialists extra is not installed ({exc})"
        return result

    (photo_path,) = photos.jpeg_files(ctx.cache_dir / "photos", 1, (1280, 960), seed=8)
    photo = Image.open(photo_path).convert("RGB")
    screenshot = _screenshot()
    model_input = photo.resize((ctx.shape.image_px, ctx.shape.image_px))

    hash_list = ctx.cache_dir / "specialists-hashes.csv"
    hash_list.write_text(f"hash,policy,label,source\n{pdq_hex(photo)},graphic_violence,bench,benchmark\n")
    ocr, nudity = OcrSpecialist(), NuditySpecialist()
    matcher = HashMatchSpecialist(HashListFile(hash_list))
    scorer = load_scorer(ctx.model_dir())
    pack = default_pack()
    prompts = [pack.prompt(policy) for policy in pack.policies]
    if matcher.match(photo) is None:
        raise RuntimeError("the benchmark photo does not match its own hash")

    variants = {
        "ocr/screenshot": lambda: ocr.analyse(screenshot) and None,
        "ocr/photo": lambda: ocr.analyse(photo) and None,
        "nudity/photo": lambda: nudity.analyse(photo) and None,
        "hash_match/photo": lambda: matcher.analyse(photo) and None,
        "vlm/photo": lambda: scorer.score([ScoringRequest(model_input, "bench-photo", prompts)]) and None,
    }
    progress(f"section 8: {ctx.warmup} + {ctx.repeats} rounds of {', '.join(variants)}")
    result.figures = interleaved(variants, repeats=ctx.repeats, warmup=ctx.warmup)
    result.ratios["vlm_over_hash_match"] = ratio(result.figures, "vlm/photo", "hash_match/photo")
    result.ratios["vlm_over_nudity"] = ratio(result.figures, "vlm/photo", "nudity/photo")
    result.info = {
        "model": ctx.shape.describe(),
        "policies": len(prompts),
        "ocr": {"limit_side_len": ocr.limit_side_len, "min_confidence": ocr.min_confidence},
        "photo": "1280x960 JPEG (the VLM gets it at the model's edge)",
    }
    table = Table(["what", "image", "ms p50", "VLM (10 policies) / this"])
    vlm = result.figures["vlm/photo"].median
    for name, figure in result.figures.items():
        what, image = name.split("/")
        table.add(what, image, fmt(figure.median), "-" if what == "vlm" else f"{vlm / figure.median:.1f}x")
    result.tables.append(("milliseconds per image, 2 cores", table))
    return result
