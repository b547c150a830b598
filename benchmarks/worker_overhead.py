"""Section 3: the worker's own overhead: the real worker with a model that costs nothing, against the floor.

On the embedded stack (tansu, SeaweedFS on 127.0.0.1): N distinct JPEGs of a few hundred KB uploaded and N
request events published, then the real worker (``build_runtime`` with the ``FakeScorer``, ``max_events=N``)
drains the backlog. Against it, a bare loop that only fetches the same objects (a boto3 client with the
worker's settings, as many threads as its ``fetch_concurrency``) and decodes them with the worker's
``decode_image``: the physical floor of this machine. Both are timed while they work through the N images:
the worker from partition assignment (the group join is not throughput) to its last commit.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.fixtures import Context
from benchmarks.report import SectionResult, Table, fmt
from benchmarks.timing import Figure, interleaved, progress, ratio
from benchmarks.worker_runs import publish_requests, run_worker, worker_settings
from moderation_worker.config import Settings
from moderation_worker.fetch import make_s3_client
from moderation_worker.images import decode_image
from moderation_worker.model.fake import FakeScorer

UPLOAD_SIZE = (1280, 960)
STAGES = ("fetch", "decode", "score", "publish", "commit", "batch")
PER_EVENT = ("fetch", "decode")  # observed once per event; the others once per batch
SCRAPERS = 16  # clients scraping the health server in the scraped runs (a Prometheus fleet and probes)
PACED_INTERVAL_S = 1.0  # each paced scraper's wait between requests (Prometheus scrapes every 15 s)
# --quick's runs last a fraction of a second: at 1 s a paced round could see no scrape at all.
QUICK_PACED_INTERVAL_S = 0.02


def bare_loop(settings: Settings, bucket: str, keys: list[str]) -> float:
    """Fetch and decode every object with the worker's client settings and concurrency: events/s."""
    client = make_s3_client(settings)
    limits = dict(
        max_edge=settings.max_image_edge,
        max_pixels=settings.max_image_pixels,
        allowed_formats=settings.allowed_formats,
    )

    def one(key: str) -> None:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            data = body.read()
        finally:
            body.close()
        decode_image(data, **limits)

    with ThreadPoolExecutor(max_workers=settings.fetch_concurrency, thread_name_prefix="bare") as pool:
        started = time.perf_counter()
        list(pool.map(one, keys))
        elapsed = time.perf_counter() - started
    client.close()
    return len(keys) / elapsed


def run(ctx: Context) -> SectionResult:
    result = SectionResult(3, "worker_overhead", "The worker's own overhead (FakeScorer) vs fetch+decode")
    count = 16 if ctx.quick else 200
    size = (320, 240) if ctx.quick else UPLOAD_SIZE
    stack = ctx.stack()
    bucket, keys = ctx.uploaded_photos(count, size)
    topic = publish_requests(stack, bucket, keys)
    base = worker_settings(stack, input_topic=topic, quick=ctx.quick)
    scorer = FakeScorer()
    runs: list = []

    scraped: dict[str, list] = {"flood": [], "paced": []}

    def worker() -> float:
        run = run_worker(base, scorer, count)
        runs.append(run)
        return run.events_per_s

    def scraped_worker(kind: str, interval_s: float):
        def measure() -> float:
            run = run_worker(base, scorer, count, scrapers=SCRAPERS, scrape_interval_s=interval_s)
            scraped[kind].append(run)
            return run.events_per_s

        return measure

    def floor() -> float:
        return bare_loop(base, bucket, keys)

    warmup = ctx.warmup if not ctx.quick else 0
    paced_interval = QUICK_PACED_INTERVAL_S if ctx.quick else PACED_INTERVAL_S
    paced = f"1 request per {paced_interval:g} s each"
    progress(
        f"section 3: {warmup} + {ctx.repeats} rounds of the worker and the bare loop over {count} images"
    )
    figures = interleaved(
        {
            "worker": worker,
            "worker_scraped_paced": scraped_worker("paced", paced_interval),
            "worker_scraped_flood": scraped_worker("flood", 0.0),
            "bare_loop": floor,
        },
        repeats=ctx.repeats,
        warmup=warmup,
        scale=1.0,
        unit="events/s",
    )
    for figure in figures.values():
        figure.unit = "events/s"
        figure.higher_is_better = True
    result.figures["worker_events_per_s"] = figures["worker"]
    result.figures["bare_loop_events_per_s"] = figures["bare_loop"]
    for kind in ("paced", "flood"):
        result.figures[f"worker_scraped_{kind}_events_per_s"] = figures[f"worker_scraped_{kind}"]
        result.ratios[f"scraped_{kind}_over_unscraped"] = ratio(
            result.figures, f"worker_scraped_{kind}_events_per_s", "worker_events_per_s"
        )
        runs_of_kind = scraped[kind][warmup:]
        result.figures[f"scrapes_{kind}_per_s"] = Figure(
            "requests/s", [run.scrapes / run.seconds for run in runs_of_kind], higher_is_better=True
        )
        # A count that should be zero: recorded as information, not as a figure (figures are positive).
        result.info[f"scrape_{kind}_failures"] = [run.scrape_failures for run in runs_of_kind]
    result.ratios["worker_over_bare_loop"] = ratio(
        result.figures, "worker_events_per_s", "bare_loop_events_per_s"
    )
    measured = runs[warmup:]
    for stage in STAGES:
        figure = Figure("ms", note="mean per event" if stage in PER_EVENT else "mean per batch")
        for run in measured:
            total, observations = run.stages[stage]
            if observations:
                figure.samples.append(total / observations * 1000)
        if figure.samples:
            result.figures[f"worker_stage/{stage}"] = figure
    result.figures["worker_batches"] = Figure("batches", [float(run.batches) for run in measured])
    result.info |= {
        "images": count,
        "photo_size": list(size),
        "batch_size": base.batch_size,
        "fetch_concurrency": base.fetch_concurrency,
        "max_image_edge": base.max_image_edge,
        "input_partitions": 3,
        "scorer": "FakeScorer (a hash per policy: no model)",
        "policies": "the default pack (10)",
        "timed": "worker: from partition assignment to its last commit; bare loop: the whole pool.map",
        "rebalances_during_timed_runs": sum(run.rebalances for run in measured),
    }

    table = Table(["what", "events/s", "min", "max"])
    for label, key in (
        ("worker (FakeScorer)", "worker_events_per_s"),
        (f"worker, {SCRAPERS} scrapers, {paced}", "worker_scraped_paced_events_per_s"),
        (f"worker, {SCRAPERS} scrapers flooding its health server", "worker_scraped_flood_events_per_s"),
        ("bare fetch+decode", "bare_loop_events_per_s"),
    ):
        figure = result.figures[key]
        table.add(label, fmt(figure.median), fmt(min(figure.samples)), fmt(max(figure.samples)))
    table.add("worker / bare loop", fmt(result.ratios["worker_over_bare_loop"].value) + "x", "", "")
    for kind, label in (("paced", paced), ("flood", "flooding")):
        ratio_text = fmt(result.ratios[f"scraped_{kind}_over_unscraped"].value) + "x"
        table.add(f"with {SCRAPERS} scrapers {label} / without", ratio_text, "", "")
        failed = fmt(max(result.info[f"scrape_{kind}_failures"]))
        answered = fmt(result.figures[f"scrapes_{kind}_per_s"].median)
        table.add(f"  scrapes answered per s, {label} (failed)", f"{answered} ({failed})", "", "")
    result.tables.append((f"median over {ctx.repeats} interleaved rounds, {count} images", table))
    stages = Table(["worker stage", "ms", "per"])
    for stage in STAGES:
        key = f"worker_stage/{stage}"
        if key in result.figures:
            stages.add(stage, fmt(result.figures[key].median), "event" if stage in PER_EVENT else "batch")
    stages.add("batches per run", fmt(result.figures["worker_batches"].median), "")
    result.tables.append(("time per stage (WorkerMetrics histograms: sum / count, median over runs)", stages))
    result.add_target("worker throughput vs the bare fetch+decode loop", "worker_over_bare_loop", minimum=0.5)
    return result
