"""Section 8: the specialists, milliseconds per image on this machine, beside the VLM they stand next to.

Each specialist and the CPU benchmark model's ``score()`` (10 policies of the default pack, one image)
run interleaved on the same images: a 1280x960 photo (decoded and resized as the image stage would
for the model, at the model's 448 px) and a 900x360 screenshot with a card number, an address and a
price. The ratios say what a hash hit (the VLM skipped for the image) and a specialist-decided policy
(the VLM skipped for that policy) save against the VLM path.
"""

from __future__ import annotations

import json

from PIL import Image

from benchmarks import photos
from benchmarks.fixtures import Context, default_pack, load_scorer
from benchmarks.report import REPO, SectionResult, Table, fmt
from benchmarks.timing import interleaved, progress, ratio
from moderation_worker import samples
from moderation_worker.app import build_pipeline
from moderation_worker.cache import BoundedLRUCache
from moderation_worker.config import Settings
from moderation_worker.fetch import LocalFileFetcher
from moderation_worker.model.base import ScoringRequest
from moderation_worker.outcomes import InboundRecord, OutcomeKind
from moderation_worker.policies import load_policy_pack


def _screenshot() -> Image.Image:
    lines = ["Card: 4111 1111 1111 1111", "Contact: jane.doe@example.com", "Price: $19.99"]
    return samples.screenshot([(text, 28, (0, 0, 0)) for text in lines])


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

    # The whole pipeline on a batch of 8 (4 photos, 4 screenshots), verdict cache off: the default pack
    # against the same pack with the specialists (OCR on personal_data, nudity on sexual_content).
    batch_dir = ctx.cache_dir / "specialists-batch"
    batch_dir.mkdir(parents=True, exist_ok=True)
    batch = []
    for index in range(4):
        photo.save(batch_dir / f"photo-{index}.jpg", quality=90 - index)  # distinct bytes, no dedup
        screenshot.save(batch_dir / f"shot-{index}.png", optimize=index % 2 == 1)
        batch += [batch_dir / f"photo-{index}.jpg", batch_dir / f"shot-{index}.png"]
    pipelines = {
        name: build_pipeline(
            Settings(worker_id="benchmark", health_port=None, policy_pack=path),
            scorer=scorer,
            pack=load_policy_pack(path),
            verdict_cache=BoundedLRUCache(0),
            fetcher=LocalFileFetcher(max_bytes=16 * 2**20),
        )
        for name, path in (("default", REPO / "policies/default.yaml"),
                           ("specialists", REPO / "policies/specialists.yaml"))
    }  # fmt: skip
    records = [
        InboundRecord(topic="b", partition=0, offset=n, key=None,
                      value=json.dumps({"event_id": f"b{n}", "image_url": str(path)}).encode())
        for n, path in enumerate(batch)
    ]  # fmt: skip

    def process(pipeline):
        outcomes = pipeline.process(records)
        if any(o.kind is not OutcomeKind.RESULT for o in outcomes):
            raise RuntimeError(f"the benchmark batch did not score: {[o.error for o in outcomes]}")

    variants = {
        "ocr/screenshot": lambda: ocr.analyse(screenshot) and None,
        "ocr/photo": lambda: ocr.analyse(photo) and None,
        "nudity/photo": lambda: nudity.analyse(photo) and None,
        "hash_match/photo": lambda: matcher.analyse(photo) and None,
        "vlm/photo": lambda: scorer.score([ScoringRequest(model_input, "bench-photo", prompts)]) and None,
        "pipeline/default": lambda: process(pipelines["default"]),
        "pipeline/specialists": lambda: process(pipelines["specialists"]),
    }
    progress(f"section 8: {ctx.warmup} + {ctx.repeats} rounds of {', '.join(variants)}")
    result.figures = interleaved(variants, repeats=ctx.repeats, warmup=ctx.warmup)
    result.ratios["vlm_over_hash_match"] = ratio(result.figures, "vlm/photo", "hash_match/photo")
    result.ratios["vlm_over_nudity"] = ratio(result.figures, "vlm/photo", "nudity/photo")
    result.ratios["pipeline_specialists_over_default"] = ratio(
        result.figures, "pipeline/specialists", "pipeline/default"
    )
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
        if what == "pipeline":
            continue
        table.add(what, image, fmt(figure.median), "-" if what == "vlm" else f"{vlm / figure.median:.1f}x")
    result.tables.append(("milliseconds per image, 2 cores", table))
    whole = Table(["pack", "ms per batch of 8 (4 photos, 4 screenshots)", "images/s"])
    for name in ("default", "specialists"):
        median = result.figures[f"pipeline/{name}"].median
        whole.add(name, fmt(median), fmt(8000 / median))
    result.tables.append(("the pipeline with and without the specialists", whole))
    for pipeline in pipelines.values():
        pipeline.close()
    return result
