"""Section 6: the review console's database work, on SQLite and on a real PostgreSQL started here.

- Ingestion: verdicts through ``ingest`` (one transaction per batch of 500, as the ingester does),
  each a new content: verdicts/s.
- Claims: a queue of 100,000 open items (bulk-loaded), 20 moderators in threads each taking the next
  item as soon as they have one: the latency of one ``claim_next`` transaction, p50 and p95.
- The item page: GET /items/{id} through the real application (in-process ASGI: routing, session
  lookup, the item's view and history queries, the template), p50 and p95.
Against the issue's bar: a moderator should never wait on the console, claim and page under 100 ms at
p95 on PostgreSQL. Figures only; nothing here asserts a time.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import insert

from benchmarks.fixtures import Context
from benchmarks.report import SectionResult, Table, fmt
from benchmarks.timing import Figure, percentile, progress

MODERATORS = 20


def _databases(root: Path):
    """(name, a function making a new empty database's URL) for SQLite, then PostgreSQL if it is here."""
    from tests.review import postgres

    yield "sqlite", lambda: f"sqlite:///{root / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    reason = postgres.unavailable_reason()
    if reason:
        progress(f"section 6: PostgreSQL skipped: {reason}")
        return
    cluster = postgres.PostgresCluster().start()
    try:
        yield "postgresql", lambda: cluster.create_database(f"bench_{uuid.uuid4().hex[:8]}")
    finally:
        cluster.stop()


def _ingest_rate(sessions, count: int) -> float:
    from moderation_worker.review.ingest import ingest
    from moderation_worker.review.store import transaction
    from tests.review.factories import record, verdict

    records = [
        record(verdict(f"i{n}", content_id=f"ingest-{n}", triggered={"weapons": 0.9}), offset=n)
        for n in range(count)
    ]
    started = time.perf_counter()
    for start in range(0, count, 500):
        with transaction(sessions) as session:
            ingest(session, records[start : start + 500], sample_rate=0)
    return count / (time.perf_counter() - started)


def _bulk_queue(sessions, count: int) -> None:
    from moderation_worker.review.models import Item, utcnow
    from moderation_worker.review.store import transaction

    now = utcnow()
    rows = [
        {
            "queue": "default", "status": "open", "content_key": f"bulk:{n}", "tenant": "bench",
            "content_id": f"bulk-{n}", "sha256": f"{n:064x}", "decision": "review" if n % 7 else "block",
            "decision_rank": 1 if n % 7 else 2, "severity": "medium", "severity_rank": n % 4,
            "created_at": now, "updated_at": now,
        }
        for n in range(count)
    ]  # fmt: skip
    for start in range(0, count, 10_000):
        with transaction(sessions) as session:
            session.execute(insert(Item), rows[start : start + 10_000])


def _claim_latencies(sessions, claims_each: int) -> list[float]:
    from moderation_worker.review import auth, queue
    from moderation_worker.review.store import transaction

    with transaction(sessions) as session:
        users = [auth.add_user(session, f"bench-{n}-{uuid.uuid4().hex[:4]}", "moderator", None, actor="bench")
                 for n in range(MODERATORS)]  # fmt: skip
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(MODERATORS)

    def moderator(user) -> None:
        start.wait()
        for _ in range(claims_each):
            t0 = time.perf_counter()
            with transaction(sessions) as session:
                queue.claim_next(session, user, lease_s=600)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=moderator, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def _page_latencies(database_url: str, root: Path, requests: int) -> list[float]:
    from fastapi.testclient import TestClient

    from moderation_worker.review.ingest import ingest
    from moderation_worker.review.settings import ReviewSettings
    from moderation_worker.review.store import transaction
    from tests.review.factories import record, verdict
    from tests.review.web_fixtures import build_console

    review = ReviewSettings(database_url=database_url)
    console = build_console(root, review=review, verdicts=[])
    try:
        with transaction(console.context.sessions) as session:  # an item with some history
            history = [
                verdict(f"page-{n}", content_id="page-item", triggered={"drugs": 0.9}) for n in range(5)
            ]
            ingest(session, [record(v, offset=n) for n, v in enumerate(history)], sample_rate=0)
        client: TestClient = console.login("mo")
        taken = client.post("/next", data={"csrf_token": console.csrf(), "queue": "default"})
        path = str(taken.url).replace(str(client.base_url), "")
        latencies = []
        for _ in range(requests):
            t0 = time.perf_counter()
            response = client.get(path)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        return latencies
    finally:
        console.client.close()
        console.context.engine.dispose()


def run(ctx: Context) -> SectionResult:
    from moderation_worker.review.store import make_engine, migrate, session_factory

    result = SectionResult(6, "review_console", "The review console: ingestion, claims, the item page")
    ingest_count = 1000 if ctx.quick else 10_000
    queue_size = 2000 if ctx.quick else 100_000
    claims_each = 5 if ctx.quick else 50
    page_requests = 20 if ctx.quick else 200
    root = ctx.cache_dir / "review-bench"
    root.mkdir(parents=True, exist_ok=True)
    table = Table(
        ["database", "ingest verdicts/s", "claim p50 ms", "claim p95 ms", "page p50 ms", "page p95 ms"]
    )
    for name, new_database in _databases(root):
        progress(f"section 6: {name}: ingesting {ingest_count}, claiming over {queue_size}, the item page")
        engine = make_engine(new_database(), pool_size=MODERATORS)
        migrate(engine)
        sessions = session_factory(engine)
        rate = Figure("verdicts/s", [_ingest_rate(sessions, ingest_count)], higher_is_better=True)
        _bulk_queue(sessions, queue_size)
        claims = _claim_latencies(sessions, claims_each)
        engine.dispose()
        pages = _page_latencies(new_database(), root, page_requests)
        result.figures[f"{name}/ingest_verdicts_per_s"] = rate
        result.figures[f"{name}/claim_ms"] = Figure(
            "ms", claims, note=f"{MODERATORS} moderators, {queue_size} items"
        )
        result.figures[f"{name}/claim_p95_ms"] = Figure("ms", [percentile(claims, 95)])
        result.figures[f"{name}/item_page_ms"] = Figure("ms", pages, note="GET /items/{id}, in-process")
        result.figures[f"{name}/item_page_p95_ms"] = Figure("ms", [percentile(pages, 95)])
        table.add(name, fmt(rate.median), fmt(percentile(claims, 50)), fmt(percentile(claims, 95)),
                  fmt(percentile(pages, 50)), fmt(percentile(pages, 95)))  # fmt: skip
        if name == "postgresql":
            result.add_target("claim p95 under 100 ms on PostgreSQL", "postgresql/claim_p95_ms", maximum=100)
            result.add_target(
                "item page p95 under 100 ms on PostgreSQL", "postgresql/item_page_p95_ms", maximum=100
            )
    result.info = {
        "ingest_verdicts": ingest_count,
        "queue_items": queue_size,
        "moderators": MODERATORS,
        "claims_per_moderator": claims_each,
        "page_requests": page_requests,
    }
    result.tables.append((f"{MODERATORS} concurrent moderators over a queue of {queue_size} items", table))
    return result
