"""Section 2: one event's latency through the real Pipeline when its image was seen before.

Three cases per repeat, each with a photo no earlier repeat used, in this order (each needs the one before):
- miss: a new image: fetch, decode, vision encoder, language model, verdicts;
- verdict hit: the same image again with the same pack: its scores come from the verdict cache;
- feature hit: the same image with a changed pack (its version bumped and one policy's rule reworded), so the
  verdict cache misses but the image's vision features come from the feature cache.
The pipeline is built by ``moderation_worker.app.build_pipeline`` with the CPU benchmark model, a local-file
fetcher (no S3 in the way) and the worker's default caches. Photos of two sizes: the benchmark model's own
(448 px) and a phone-sized upload (1280x960, a few hundred KB), whose decoding every case pays.
"""

from __future__ import annotations

import json
import time
import uuid

from benchmarks import photos
from benchmarks.fixtures import Context, default_pack, load_scorer, scorer_options
from benchmarks.report import SectionResult, Table, fmt
from benchmarks.timing import Figure, progress, ratio
from moderation_worker.app import build_pipeline
from moderation_worker.cache import BoundedLRUCache, make_feature_cache
from moderation_worker.config import Settings
from moderation_worker.fetch import LocalFileFetcher
from moderation_worker.outcomes import InboundRecord, OutcomeKind
from moderation_worker.pipeline import Pipeline
from moderation_worker.policies import PolicyPack

CASES = ("miss", "verdict_hit", "feature_hit")
STAGES = ("fetch", "decode", "score")


def changed_pack(pack: PolicyPack) -> PolicyPack:
    """The pack after an edit: its version bumped and its first policy's rule reworded (version bumped)."""
    document = pack.model_dump(mode="json")
    document["version"] = f"{pack.version}-edited"
    first = document["policies"][0]
    first["rule"] = first["rule"].rstrip() + " Artistic nudity in museums is allowed."
    first["version"] += 1
    return PolicyPack.model_validate(document)


def _median_cell(result: SectionResult, key: str) -> str:
    figure = result.figures.get(key)
    return "-" if figure is None else fmt(figure.median)


def _record(path: str) -> InboundRecord:
    event = {"event_id": f"bench-{uuid.uuid4().hex}", "image_url": path, "content_id": "repeated"}
    return InboundRecord(topic="bench", partition=0, offset=0, key=None, value=json.dumps(event).encode())


def _one_event(pipeline: Pipeline, path: str, case: str) -> tuple[float, dict[str, float]]:
    """Seconds for one single-record batch, and the stage timings its verdict reports."""
    record = _record(path)
    started = time.perf_counter()
    (outcome,) = pipeline.process([record])
    elapsed = time.perf_counter() - started
    if outcome.kind is not OutcomeKind.RESULT or outcome.result is None:
        raise RuntimeError(f"{case}: expected a verdict, got {outcome.kind} ({outcome.error})")
    cache = outcome.result.cache
    expected = {"miss": (False, False), "verdict_hit": (True, False), "feature_hit": (False, True)}[case]
    if (cache.verdict, cache.feature) != expected:
        raise RuntimeError(f"{case}: the verdict reports cache hits {cache}, expected {expected}")
    return elapsed, dict(outcome.result.timings_ms)


def run(ctx: Context) -> SectionResult:
    result = SectionResult(2, "repeated_image", "A repeated image: one event through the Pipeline")
    shape = ctx.shape
    settings = Settings(worker_id="benchmark", health_port=None)
    scorer = load_scorer(ctx.model_dir(), feature_cache=make_feature_cache(settings.feature_cache_bytes))
    pack = default_pack()
    edited = changed_pack(pack)
    verdicts = BoundedLRUCache(settings.verdict_cache_entries)
    fetcher = LocalFileFetcher(max_bytes=settings.max_image_bytes)
    pipelines = {
        "pack": build_pipeline(settings, scorer=scorer, pack=pack, verdict_cache=verdicts, fetcher=fetcher),
        "edited": build_pipeline(
            settings, scorer=scorer, pack=edited, verdict_cache=verdicts, fetcher=fetcher
        ),
    }
    sizes = {
        f"{shape.image_px}px": (shape.image_px, shape.image_px),
        "1280x960" if not ctx.quick else "320x240": (1280, 960) if not ctx.quick else (320, 240),
    }
    runs = ctx.warmup + ctx.repeats
    files = {
        name: photos.jpeg_files(ctx.cache_dir / "photos", runs, size, seed=2) for name, size in sizes.items()
    }
    result.info = {
        "model": shape.describe(),
        "scorer_options": scorer_options(),
        "strategy": scorer.strategy,
        "pack": {"name": pack.name, "policies": len(pack.policies), "hash": pack.content_hash},
        "edited_pack_hash": edited.content_hash,
        "max_image_edge": settings.max_image_edge,
        "photo_bytes_mean": {
            name: round(sum(p.stat().st_size for p in paths) / len(paths)) for name, paths in files.items()
        },
        "order": "per repeat and size: miss, verdict hit, feature hit, each with that repeat's new photo",
    }
    for name in sizes:
        for case in CASES:
            result.figures[f"{name}/{case}"] = Figure("ms")
    progress(f"section 2: {runs} rounds of miss, verdict hit, feature hit at {', '.join(sizes)}")
    for run_index in range(runs):
        for name in sizes:
            path = str(files[name][run_index])
            for case, pipeline in (("miss", "pack"), ("verdict_hit", "pack"), ("feature_hit", "edited")):
                seconds, timings = _one_event(pipelines[pipeline], path, case)
                if run_index < ctx.warmup:
                    continue
                result.figures[f"{name}/{case}"].samples.append(seconds * 1000)
                for stage in STAGES:
                    # A stage the event skipped (a verdict-cache hit is not scored, maybe not decoded)
                    # is absent from its timings, or reported as 0: nothing was measured.
                    if timings.get(stage):
                        key = f"{name}/{case}/{stage}"
                        stage_figure = result.figures.setdefault(key, Figure("ms", note="from the verdict"))
                        stage_figure.samples.append(timings[stage])
    for pipeline in pipelines.values():
        pipeline.close()

    table = Table(["photo", "case", "latency ms", "of a miss", "fetch ms", "decode ms", "score ms"])
    for name in sizes:
        for case in ("verdict_hit", "feature_hit"):
            result.ratios[f"{name}/{case}_over_miss"] = ratio(
                result.figures, f"{name}/{case}", f"{name}/miss"
            )
        for case in CASES:
            share = "1" if case == "miss" else fmt(result.ratios[f"{name}/{case}_over_miss"].value)
            table.add(
                name,
                case.replace("_", " "),
                fmt(result.figures[f"{name}/{case}"].median),
                share,
                *(_median_cell(result, f"{name}/{case}/{stage}") for stage in STAGES),
            )
        for case, label, maximum in (("verdict_hit", "verdict", 0.05), ("feature_hit", "feature", 0.60)):
            result.add_target(
                f"{label}-cache hit vs miss, {name} photo", f"{name}/{case}_over_miss", maximum=maximum
            )
    result.tables.append(
        (
            f"median per-event latency over {ctx.repeats} repeats (pipeline.process of one record; "
            f"{len(pack.policies)} policies; model {shape.name}, strategy {scorer.strategy}); "
            "stage columns: the verdict's timings_ms",
            table,
        )
    )
    return result
