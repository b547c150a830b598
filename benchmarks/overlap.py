"""Section 4: how close the worker comes to its model alone, with and without overlapping the stages.

The same embedded stack and photos as section 3, with the CPU benchmark model as the scorer (vision
features not cached, so every image costs its full price). Three variants, interleaved in every round:
- model alone: ``scorer.score`` on the same images, decoded beforehand, in the worker's batch size;
- the worker with ``prepare_ahead=True``: the next batch is fetched and decoded while this one is scored;
- the worker with ``prepare_ahead=False``: fetch, decode, score, publish, commit, one after the other.
"""

from __future__ import annotations

import time

from benchmarks.fixtures import (
    Context,
    default_pack,
    load_scorer,
    scorer_options,
)
from benchmarks.report import SectionResult, Table, fmt
from benchmarks.timing import Figure, interleaved, progress, ratio
from benchmarks.worker_overhead import UPLOAD_SIZE
from benchmarks.worker_runs import publish_requests, run_worker, worker_settings
from moderation_worker.app import image_limits
from moderation_worker.images import decode_image
from moderation_worker.model.base import ScoringRequest

STAGES = ("fetch", "decode", "score", "publish", "commit", "batch")
PER_EVENT = ("fetch", "decode")
VARIANTS = {
    "model_alone": "model alone (score() on decoded images)",
    "worker_prepare_ahead": "worker, prepare_ahead=True",
    "worker_sequential": "worker, prepare_ahead=False",
}


def run(ctx: Context) -> SectionResult:
    result = SectionResult(
        4, "overlap", "Overlap: the worker with the CPU benchmark model vs the model alone"
    )
    count, batch_size = (8, 4) if ctx.quick else (48, 8)
    size = (320, 240) if ctx.quick else UPLOAD_SIZE
    uploads = 16 if ctx.quick else 200  # section 3's upload: the first ``count`` of them are used
    stack = ctx.stack()
    bucket, keys = ctx.uploaded_photos(uploads, size)
    keys = keys[:count]
    topic = publish_requests(stack, bucket, keys)
    settings = worker_settings(stack, input_topic=topic, quick=ctx.quick, batch_size=batch_size)
    scorer = load_scorer(ctx.model_dir())  # no feature cache: every run pays for every image
    pack = default_pack()
    prompts = [pack.prompt(policy) for policy in pack.policies]

    client = stack.s3_endpoint.client()
    # The same limits the worker's pipeline uses (the edge lowered to the model's input), so both sides
    # score the same pixels.
    limits = image_limits(settings, scorer)
    decoded = [
        decode_image(
            client.get_object(Bucket=bucket, Key=key)["Body"].read(),
            max_edge=limits.max_edge,
            max_pixels=limits.max_pixels,
            allowed_formats=limits.allowed_formats,
        )
        for key in keys
    ]
    client.close()
    requests = [ScoringRequest(image=d.image, image_key=d.cache_key, prompts=prompts) for d in decoded]

    def model_alone() -> float:
        started = time.perf_counter()
        for start in range(0, len(requests), batch_size):
            scorer.score(requests[start : start + batch_size])
        return len(requests) / (time.perf_counter() - started)

    runs: dict[str, list] = {"worker_prepare_ahead": [], "worker_sequential": []}

    def worker(prepare_ahead: bool, name: str):
        def call() -> float:
            run = run_worker(settings.model_copy(update={"prepare_ahead": prepare_ahead}), scorer, count)
            runs[name].append(run)
            return run.events_per_s

        return call

    warmup = ctx.warmup if not ctx.quick else 0
    progress(f"section 4: {warmup} + {ctx.repeats} rounds of 3 variants over {count} images")
    figures = interleaved(
        {
            "model_alone": model_alone,
            "worker_prepare_ahead": worker(True, "worker_prepare_ahead"),
            "worker_sequential": worker(False, "worker_sequential"),
        },
        repeats=ctx.repeats,
        warmup=warmup,
        scale=1.0,
        unit="images/s",
    )
    for name, figure in figures.items():
        figure.higher_is_better = True
        result.figures[f"{name}_images_per_s"] = figure
    for name in ("worker_prepare_ahead", "worker_sequential"):
        result.ratios[f"{name}_over_model_alone"] = ratio(
            result.figures, f"{name}_images_per_s", "model_alone_images_per_s"
        )
        for stage in STAGES:
            note = "mean per event" if stage in PER_EVENT else "mean per batch"
            if stage == "batch":
                note += ", from its poll to its commit (with prepare_ahead: overlaps the batch before)"
            figure = Figure("ms", note=note)
            for run in runs[name][warmup:]:
                total, observations = run.stages[stage]
                if observations:
                    figure.samples.append(total / observations * 1000)
            if figure.samples:
                result.figures[f"{name}/stage/{stage}"] = figure
    result.ratios["prepare_ahead_over_sequential"] = ratio(
        result.figures, "worker_prepare_ahead_images_per_s", "worker_sequential_images_per_s"
    )
    shape = ctx.shape
    result.info = {
        "model": shape.describe(),
        "scorer_options": scorer_options(),
        "strategy": scorer.strategy,
        "images": count,
        "photo_size": list(size),
        "batch_size": batch_size,
        "fetch_concurrency": settings.fetch_concurrency,
        "max_image_edge": settings.max_image_edge,
        "decoded_image_edge": limits.max_edge,
        "policies": len(prompts),
        "feature_cache": "none",
        "timed": "worker: partition assignment to last commit; model alone: all its score() calls",
        "rebalances_during_timed_runs": sum(run.rebalances for name in runs for run in runs[name][warmup:]),
    }

    # The worker's own "batch" stage runs from a batch's poll to its commit: with prepare_ahead that spans
    # the previous batch's finish too, so it is in the JSON but not compared here.
    table = Table(["variant", "images/s", "of model alone", "score ms/batch", "decode ms/event"])
    for name, label in VARIANTS.items():
        share = "1" if name == "model_alone" else fmt(result.ratios[f"{name}_over_model_alone"].value)
        score = result.figures.get(f"{name}/stage/score")
        decode = result.figures.get(f"{name}/stage/decode")
        table.add(
            label,
            fmt(result.figures[f"{name}_images_per_s"].median),
            share,
            fmt(score.median) if score else "-",
            fmt(decode.median) if decode else "-",
        )
    table.add(
        "prepare_ahead / sequential",
        fmt(result.ratios["prepare_ahead_over_sequential"].value) + "x",
        "",
        "",
        "",
    )
    result.tables.append(
        (
            f"median over {ctx.repeats} interleaved rounds; {count} images of {size[0]}x{size[1]}, "
            f"batches of {batch_size}, {len(prompts)} policies; "
            f"model {shape.name}, strategy {scorer.strategy}",
            table,
        )
    )
    result.add_target(
        "worker (prepare_ahead) throughput vs the model alone",
        "worker_prepare_ahead_over_model_alone",
        minimum=0.9,
    )
    return result
