"""Dynamic batching and backpressure, over real HTTP: concurrent requests share scoring calls and get
the answers lone requests get; past the queue's bound, clean 429s, and the server answers again after."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from moderation_worker.api.batcher import Batcher, Expired, QueueFull
from moderation_worker.pipeline import PreparedBatch
from tests.api.conftest import SlowScorer, data_url, png

pytestmark = [pytest.mark.integration]


def _images(n: int) -> list[str]:
    return [data_url(png((n * 9 % 256, 40 + n, 200 - n), size=(64 + n, 48))) for n in range(n)]


async def _concurrently(base: str, urls: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post(f"{base}/v1/moderate", json={"event_id": f"c{n}", "image_url": u})
                for n, u in enumerate(urls)
            )
        )


@pytest.fixture
def tiny_scorer(tiny_model_dir):
    from moderation_worker.model.hf import HFScorer

    scorer = HFScorer.from_pretrained(str(tiny_model_dir), local_files_only=True)
    calls = []
    score = scorer.score

    def counting(requests):
        calls.append(len(requests))
        return score(requests)

    scorer.score = counting
    return scorer, calls


def test_concurrent_requests_share_scoring_calls_and_get_what_a_lone_request_gets(serve_api, tiny_scorer):
    scorer, calls = tiny_scorer
    served = serve_api(scorer=scorer, max_wait_ms=100, max_batch=16)
    urls = _images(12)

    responses = asyncio.run(_concurrently(served.url, urls))
    batched_calls = list(calls)
    assert all(r.status_code == 200 for r in responses), [r.text[:200] for r in responses]
    assert len(batched_calls) < len(urls)  # twelve requests, fewer model calls
    assert sum(batched_calls) == len(urls)

    # each answer equals what the same image gets alone
    for n, url in enumerate(urls[:4]):
        alone = httpx.post(
            f"{served.url}/v1/moderate", json={"event_id": f"alone{n}", "image_url": url}, timeout=60
        )
        batched = {p["id"]: p["score"] for p in responses[n].json()["policies"]}
        lone = {p["id"]: p["score"] for p in alone.json()["policies"]}
        assert batched.keys() == lone.keys()
        assert all(abs(batched[k] - lone[k]) < 1e-5 for k in lone)


def test_past_the_queue_bound_clients_get_clean_429s_and_the_server_answers_again_after(serve_api):
    served = serve_api(scorer=SlowScorer(0.3), queue_max_requests=2, max_batch=1, max_wait_ms=0)
    urls = _images(16)

    responses = asyncio.run(_concurrently(served.url, urls))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
    busy = next(r for r in responses if r.status_code == 429)
    assert busy.json()["error"]["code"] == "queue_full" and int(busy.headers["Retry-After"]) >= 1

    # the process stayed up and answers again once the load is gone
    assert httpx.get(f"{served.url}/livez").status_code == 200
    again = httpx.post(
        f"{served.url}/v1/moderate", json={"event_id": "after", "image_url": urls[0]}, timeout=30
    )
    assert again.status_code == 200
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'moderation_api_requests_total{endpoint="moderate",status="429"}' in metrics
    assert "moderation_api_batch_size_requests_count" in metrics


def test_a_request_that_waits_past_its_deadline_gets_504(serve_api):
    served = serve_api(scorer=SlowScorer(1.0), request_timeout_s=0.4, max_batch=1, max_wait_ms=0)
    responses = asyncio.run(_concurrently(served.url, _images(3)))
    assert 504 in {r.status_code for r in responses}
    timed_out = next(r for r in responses if r.status_code == 504)
    assert timed_out.json()["error"]["code"] == "timeout"


class _RecordingPipeline:
    def __init__(self) -> None:
        self.finished: list[int] = []
        self.started = threading.Event()  # a scoring call has begun
        self.release = threading.Event()

    def finish(self, prepared):
        self.started.set()
        self.release.wait(10)
        self.finished.append(len(prepared.jobs))
        return [f"outcome-{i}" for i in range(len(prepared.jobs))]


def test_a_cancelled_ticket_is_dropped_before_it_is_scored_and_the_bounds_hold():
    # Given a batcher whose first scoring call is held, and two more requests waiting behind it
    pipeline = _RecordingPipeline()
    batcher = Batcher(pipeline, max_batch=4, max_wait_s=0, max_requests=3, max_bytes=1000)
    job = PreparedBatch(("job",))
    first = batcher.submit(job, size_bytes=10, timeout_s=30)
    assert pipeline.started.wait(10)  # the scoring thread took the first alone and is held
    second = batcher.submit(job, size_bytes=10, timeout_s=30)
    gone = batcher.submit(job, size_bytes=10, timeout_s=30)
    with pytest.raises(QueueFull):
        batcher.submit(job, size_bytes=2000, timeout_s=30)  # over the byte bound

    gone.cancel()  # its client went away
    pipeline.release.set()

    assert first.future.result(10) == ["outcome-0"] and second.future.result(10) == ["outcome-0"]
    with pytest.raises(Expired):
        gone.future.result(10)
    assert pipeline.finished == [1, 1]  # the cancelled one was never scored
    batcher.close()


def test_a_lone_request_never_waits_and_a_forming_batch_waits_for_announced_requests():
    pipeline = _RecordingPipeline()
    pipeline.release.set()
    batcher = Batcher(pipeline, max_batch=4, max_wait_s=60, max_requests=10, max_bytes=10**6)
    job = PreparedBatch(("job",))
    try:
        # Nothing else announced: scored at once, although a batch may wait 60 s for company
        assert batcher.submit(job, size_bytes=1, timeout_s=30).future.result(10) == ["outcome-0"]
        assert pipeline.finished == [1]

        with batcher.expect():  # B is being prepared
            with batcher.expect():  # so is A, which arrives first
                a = batcher.submit(job, size_bytes=1, timeout_s=30)
            with pytest.raises(TimeoutError):  # A's batch waits for B (for up to 60 s)
                a.future.result(timeout=0.5)
            b = batcher.submit(job, size_bytes=1, timeout_s=30)
        assert a.future.result(10) == ["outcome-0"] and b.future.result(10) == ["outcome-1"]
        assert pipeline.finished == [1, 2]  # one call for both
    finally:
        batcher.close()
