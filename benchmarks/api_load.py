"""Section 7: the synchronous API under load, as a client sees it.

``moderation-worker serve`` runs as a process of its own (the production command, the CPU benchmark
model through the production loader, the local stack's S3), and an async httpx client in this process
keeps 1, 4, 8, 16 and 64 requests in flight (closed loop: each client sends its next request when its
answer arrives) to ``POST /v1/moderations``, one distinct photo (an ``s3://`` URL) per request, the
whole default pack per image. Both caches are off, so no answer is served from memory; the hit rate
is counted from the answers anyway (each carries ``cache``).

Per concurrency: requests per second, latency p50/p95/p99 of the answered requests, errors (anything
but 200 and 429, connection failures included) and 429s counted apart, and the batch sizes the server
formed (its ``moderation_api_batch_size_requests`` histogram, read from ``/metrics`` before and
after). Levels run in an order rotated from repeat to repeat.

Beside them: the reference served model's published figures (another model on other hardware, one
question per request), printed and never divided by ours.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.fixtures import Context
from benchmarks.report import REPO, SectionResult, Table, fmt
from benchmarks.timing import Figure, percentile, progress, ratio
from benchmarks.worker_overhead import UPLOAD_SIZE

LEVELS = (1, 4, 8, 16, 64)
QUICK_LEVELS = (1, 4, 16)
# The reference served model's published figures: (concurrent clients, latency ms, errors %, note).
REFERENCE = ((1, 620, 0.0, ""), (4, 780, 0.0, ""), (8, 1150, 2.5, ""), (16, 1800, 12.0, "out of memory"))
BATCH_METRIC = "moderation_api_batch_size_requests"
BATCH_SECONDS_METRIC = "moderation_api_batch_seconds"


@dataclass
class LevelRun:
    """One level's run: ``requests`` answered (or failed) by ``concurrency`` closed-loop clients."""

    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)  # of the 200s
    statuses: Counter = field(default_factory=Counter)  # HTTP status, or "connection" for a failure
    hits: Counter = field(default_factory=Counter)  # "verdict" / "feature" cache hits among the 200s
    batches: int = 0
    batched_requests: int = 0
    largest_batch_bucket: float = 0.0  # the histogram's smallest upper bound over every batch formed
    scoring_s: float = 0.0  # the server's time in scoring calls (the model) during the run

    @property
    def answered(self) -> int:
        return self.statuses[200]

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status not in (200, 429))


class ServeProcess:
    """``python -m moderation_worker serve`` on 127.0.0.1, stopped (SIGTERM, then SIGKILL) by stop()."""

    def __init__(self, ctx: Context, *, port: int) -> None:
        stack = ctx.stack()
        endpoint = stack.s3_endpoint
        env = {key: value for key, value in os.environ.items() if not key.startswith("MODERATION_")}
        env |= {
            "MODERATION_MODEL_ID": str(ctx.model_dir()),
            "MODERATION_MODEL_LOCAL_FILES_ONLY": "true",
            "MODERATION_DEVICE": "cpu",
            "MODERATION_S3_ENDPOINT_URL": endpoint.endpoint_url,
            "MODERATION_S3_REGION": endpoint.region,
            "MODERATION_S3_ACCESS_KEY_ID": endpoint.access_key,
            "MODERATION_S3_SECRET_ACCESS_KEY": endpoint.secret_key,
            "MODERATION_VERDICT_CACHE_ENTRIES": "0",
            "MODERATION_FEATURE_CACHE_BYTES": "0",
            "MODERATION_LOG_LEVEL": "WARNING",
            "MODERATION_API_HOST": "127.0.0.1",
            "MODERATION_API_PORT": str(port),
            "MODERATION_API_REQUEST_TIMEOUT_S": "120",
        }
        self.url = f"http://127.0.0.1:{port}"
        self.log = ctx.cache_dir / f"serve-{port}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moderation_worker", "serve"],
            cwd=REPO,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}: {self._tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"serve was not ready within {timeout_s} s: {self._tail()}")

    def batch_histograms(self) -> tuple[float, float, dict[float, float], float]:
        """(batches, requests in them, {upper bound: cumulative batches}, seconds spent scoring them),
        from the server's batch-size and batch-time histograms."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        count = total = scoring_s = 0.0
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == BATCH_METRIC + "_count":
                    count = sample.value
                elif sample.name == BATCH_METRIC + "_sum":
                    total = sample.value
                elif sample.name == BATCH_METRIC + "_bucket":
                    buckets[float(sample.labels["le"])] = sample.value
                elif sample.name == BATCH_SECONDS_METRIC + "_sum":
                    scoring_s = sample.value
        return count, total, buckets, scoring_s

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self._log_file.close()

    def _tail(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-3000:]


async def _load(url: str, images: list[str], concurrency: int, requests: int) -> LevelRun:
    run = LevelRun(concurrency, 0.0)
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=180) as client:

        async def one_client() -> None:
            nonlocal sent
            while sent < requests:
                image = images[sent % len(images)]
                sent += 1
                body = {"model": "bench", "input": [{"type": "image_url", "image_url": {"url": image}}]}
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/moderations", json=body)
                except httpx.TransportError:
                    run.statuses["connection"] += 1
                    continue
                elapsed_ms = (time.perf_counter() - started) * 1000
                run.statuses[response.status_code] += 1
                if response.status_code == 200:
                    run.latencies_ms.append(elapsed_ms)
                    cache = response.json()["results"][0]["moderation_worker"]["cache"]
                    run.hits.update(kind for kind, hit in cache.items() if hit)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        run.seconds = time.perf_counter() - started
    return run


def _measure(server: ServeProcess, images: list[str], concurrency: int, requests: int) -> LevelRun:
    count0, sum0, buckets0, scoring0 = server.batch_histograms()
    run = asyncio.run(_load(server.url, images, concurrency, requests))
    count1, sum1, buckets1, scoring1 = server.batch_histograms()
    run.batches, run.batched_requests = round(count1 - count0), round(sum1 - sum0)
    run.scoring_s = scoring1 - scoring0
    grew = [bound for bound in sorted(buckets1) if buckets1[bound] - buckets0.get(bound, 0) >= run.batches]
    run.largest_batch_bucket = grew[0] if grew else float("inf")
    return run


def _requests_at(concurrency: int, quick: bool) -> int:
    return max(8, 4 * concurrency) if quick else max(48, 4 * concurrency)


def run(ctx: Context) -> SectionResult:
    from moderation_worker.localstack import free_port

    result = SectionResult(7, "api_load", "The API under load: closed-loop clients on POST /v1/moderations")
    levels = QUICK_LEVELS if ctx.quick else LEVELS
    pool = 16 if ctx.quick else 200
    bucket, keys = ctx.uploaded_photos(pool, (320, 240) if ctx.quick else UPLOAD_SIZE)
    images = [f"s3://{bucket}/{key}" for key in keys]
    server = ServeProcess(ctx, port=free_port())
    runs: dict[int, list[LevelRun]] = {level: [] for level in levels}
    try:
        progress("section 7: starting moderation-worker serve (the CPU benchmark model)")
        server.wait_ready()
        warmup = 0 if ctx.quick else ctx.warmup
        progress(f"section 7: {warmup} + {ctx.repeats} rounds at {', '.join(map(str, levels))} clients")
        for _ in range(warmup):
            for level in levels:
                _measure(server, images, level, _requests_at(level, ctx.quick))
        for repeat in range(ctx.repeats):
            shift = repeat % len(levels)
            for level in levels[shift:] + levels[:shift]:
                runs[level].append(_measure(server, images, level, _requests_at(level, ctx.quick)))
    finally:
        server.stop()
    _report(result, runs, ctx)
    return result


def _report(result: SectionResult, runs: dict[int, list[LevelRun]], ctx: Context) -> None:
    table = Table(
        ["clients", "requests/s", "p50 ms", "p95 ms", "p99 ms", "errors", "429s", "batch mean", "batch max<=",
         "model ms/image", "model busy", "cache hits"]
    )  # fmt: skip
    for level, level_runs in runs.items():
        latencies = [ms for run in level_runs for ms in run.latencies_ms]
        answered = sum(run.answered for run in level_runs)
        total = sum(sum(run.statuses.values()) for run in level_runs)
        errors = sum(run.errors for run in level_runs)
        refused = sum(run.statuses[429] for run in level_runs)
        batches = sum(run.batches for run in level_runs)
        batched = sum(run.batched_requests for run in level_runs)
        hits = sum(sum(run.hits.values()) for run in level_runs)
        largest = max(run.largest_batch_bucket for run in level_runs)
        rps = Figure("requests/s", [run.answered / run.seconds for run in level_runs], higher_is_better=True)
        result.figures[f"c{level}/requests_per_s"] = rps
        if latencies:
            result.figures[f"c{level}/latency_ms"] = Figure("ms", latencies, note="answered requests, pooled")
            for q in (50, 95, 99):
                result.figures[f"c{level}/latency_p{q}_ms"] = Figure("ms", [percentile(latencies, q)])
        # 1.0 when every request was answered 200 or 429: the target's figure (a count of errors is
        # zero when all is well, and figures are positive, so the errors themselves are information).
        result.figures[f"c{level}/answered_or_429_fraction"] = Figure(
            "fraction",
            [(run.answered + run.statuses[429]) / max(1, sum(run.statuses.values())) for run in level_runs],
            higher_is_better=True,
        )
        if batches:
            result.figures[f"c{level}/batch_mean_requests"] = Figure(
                "requests", [run.batched_requests / run.batches for run in level_runs if run.batches]
            )
        # Where the time goes: the model's time per image in this level's batches, and the share of
        # the wall time the model was busy (1.0: the model is the bottleneck; batching must do the rest).
        per_image = Figure(
            "ms", [1000 * r.scoring_s / r.batched_requests for r in level_runs if r.batched_requests]
        )
        busy = Figure("fraction", [r.scoring_s / r.seconds for r in level_runs if r.scoring_s > 0])
        if per_image.samples:
            result.figures[f"c{level}/model_ms_per_image"] = per_image
        if busy.samples:
            result.figures[f"c{level}/model_busy_fraction"] = busy
        result.info[f"c{level}"] = {
            "requests": total,
            "answered": answered,
            "errors": errors,
            "http_429": refused,
            "statuses": {str(k): v for run in level_runs for k, v in run.statuses.items()},
            "batches": batches,
            "largest_batch_at_most": largest,
            "cache_hit_rate": hits / answered if answered else 0.0,
        }
        shown = [fmt(percentile(latencies, q)) if latencies else "-" for q in (50, 95, 99)]
        table.add(level, fmt(rps.median), *shown, errors, refused,
                  fmt(batched / batches) if batches else "-", f"{largest:g}",
                  fmt(per_image.median) if per_image.samples else "-",
                  f"{100 * busy.median:.0f}%" if busy.samples else "-",
                  f"{100 * hits / answered:.1f}%" if answered else "-")  # fmt: skip
    levels = list(runs)
    top = 16 if 16 in runs else levels[-1]
    result.ratios[f"c{top}_over_c1_requests_per_s"] = ratio(
        result.figures, f"c{top}/requests_per_s", "c1/requests_per_s"
    )
    worst = min(levels, key=lambda level: result.figures[f"c{level}/answered_or_429_fraction"].median)
    result.add_target(
        "no errors other than 429 at any concurrency (answered or 429, worst level)",
        f"c{worst}/answered_or_429_fraction",
        minimum=1.0,
    )
    result.ratios[f"model_ms_per_image_c1_over_c{top}"] = ratio(
        result.figures, "c1/model_ms_per_image", f"c{top}/model_ms_per_image"
    )
    result.add_target(
        f"throughput at {top} clients over 1 client, on CPU (batching)",
        f"c{top}_over_c1_requests_per_s",
        minimum=1.5,
    )
    result.info["levels"] = levels
    result.info["requests_per_level"] = {str(level): _requests_at(level, ctx.quick) for level in levels}
    result.info["model"] = ctx.shape.describe()
    result.info["caches"] = "verdict and feature caches off (MODERATION_*_CACHE_*=0)"
    result.info["reference"] = [
        {"clients": c, "latency_ms": ms, "errors_percent": e, "note": note} for c, ms, e, note in REFERENCE
    ]
    result.tables.append(
        (
            f"ours: {ctx.shape.name}, the default pack (10 questions per request), distinct photos, "
            f"{ctx.repeats} rounds pooled",
            table,
        )
    )
    reference = Table(["clients", "latency ms", "errors", "note"])
    for clients, ms, errors, note in REFERENCE:
        reference.add(clients, ms, f"{errors:g}%", note or "-")
    result.tables.append(
        ("reference served model, published (another model, other hardware, one question per request; "
         "no ratio is computed against it)", reference)
    )  # fmt: skip
