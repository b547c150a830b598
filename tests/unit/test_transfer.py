"""Deadlines on S3 transfers, against a local server that trickles bytes (no mocks of the transfer)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from moderation_worker.config import Settings
from moderation_worker.errors import (
    ConfigurationError,
    ErrorCode,
    FetchAbortedError,
    FetchDeadlineError,
    PermanentError,
    StorageUnavailableError,
)
from moderation_worker.fetch import S3Fetcher, make_s3_client
from moderation_worker.localstack import free_port
from moderation_worker.transfer import Transfers, attach_deadlines
from tests.hostile_s3 import HostileS3, wait_until


@pytest.fixture
def hostile():
    with HostileS3(interval_s=1.0) as server:
        yield server


def _fetcher(endpoint: str, *, timeout_s: float, stop: threading.Event | None = None, attempts: int = 3):
    settings = Settings(
        s3_endpoint_url=endpoint,
        s3_access_key_id="k",
        s3_secret_access_key="s",
        s3_connect_timeout_s=1.0,
        s3_read_timeout_s=30.0,  # far longer than the deadline: only the deadline can end these fetches
        s3_max_attempts=attempts,
    )
    transfers = Transfers(stop=stop, tick_s=0.05)
    return S3Fetcher(
        client=make_s3_client(settings), max_bytes=10_000, transfers=transfers, timeout_s=timeout_s
    )


def _fetch_in_thread(fetcher: S3Fetcher, url: str) -> SimpleNamespace:
    outcome = SimpleNamespace(error=None, done=threading.Event())

    def run() -> None:
        try:
            fetcher.fetch(url)
        except Exception as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    threading.Thread(target=run, daemon=True).start()
    return outcome


@pytest.mark.parametrize("key", ["trickle-body.png", "trickle-headers.png"])
def test_a_trickling_object_is_cut_off_at_its_deadline_and_the_thread_is_freed(hostile, key):
    # Given an object the server sends one byte a second (a whole object would take minutes)
    fetcher = _fetcher(hostile.endpoint_url, timeout_s=1.0)

    outcome = _fetch_in_thread(fetcher, f"s3://bucket/{key}")

    # I expect the fetch to end with a deadline error long before the object could arrive, with
    # botocore's retries cut at once, and no transfer left in flight
    assert outcome.done.wait(timeout=30), "the fetch thread is still stuck on the trickling object"
    assert isinstance(outcome.error, FetchDeadlineError), outcome.error
    assert "did not finish within 1 s" in str(outcome.error)
    assert fetcher.transfers.in_flight() == 0
    # and the cut connection is not reused: the next fetch of another object works
    with pytest.raises(PermanentError) as caught:
        fetcher.fetch("s3://bucket/plain.png")
    assert caught.value.code is ErrorCode.OBJECT_NOT_FOUND


def test_a_stop_cuts_every_fetch_in_flight_at_once(hostile):
    stop = threading.Event()
    fetcher = _fetcher(hostile.endpoint_url, timeout_s=600.0, stop=stop)
    outcomes = [_fetch_in_thread(fetcher, f"s3://bucket/trickle-body-{n}.png") for n in range(4)]
    assert wait_until(lambda: hostile.count("trickle-body") >= 4, timeout_s=10)

    stop.set()  # what the worker's stop does

    assert all(outcome.done.wait(timeout=10) for outcome in outcomes)
    assert all(isinstance(outcome.error, FetchAbortedError) for outcome in outcomes)
    # and a fetch started after the stop is refused before it sends anything
    with pytest.raises(FetchAbortedError):
        fetcher.fetch("s3://bucket/plain.png")


@pytest.mark.parametrize(
    ("key", "expected"),
    [("always-500.png", StorageUnavailableError), ("bad-request.png", StorageUnavailableError)],
    ids=["5xx", "unknown-4xx"],
)
def test_a_5xx_or_an_unknown_4xx_stays_transient(hostile, key, expected):
    fetcher = _fetcher(hostile.endpoint_url, timeout_s=10.0, attempts=1)
    with pytest.raises(expected) as caught:
        fetcher.fetch(f"s3://bucket/{key}")
    assert not isinstance(caught.value, PermanentError)


def test_the_probe_says_the_store_serves_when_a_missing_key_is_answered(hostile):
    assert _fetcher(hostile.endpoint_url, timeout_s=5.0).store_is_serving("bucket") is True


def test_the_probe_says_the_store_does_not_serve_when_nothing_answers():
    fetcher = _fetcher(f"http://127.0.0.1:{free_port()}", timeout_s=5.0, attempts=1)
    assert fetcher.store_is_serving("bucket") is False


def test_a_botocore_without_the_internals_the_deadlines_need_refuses_to_start():
    with pytest.raises(ConfigurationError, match="locked botocore"):
        attach_deadlines(SimpleNamespace(_endpoint=SimpleNamespace(http_session=object())))


def test_the_watchdog_cuts_on_its_own_clock_and_stops_on_close():
    now = [0.0]
    transfers = Transfers(clock=lambda: now[0], tick_s=0.01)
    with transfers.transfer("s3://b/k", timeout_s=5.0) as transfer:
        time.sleep(0.05)
        assert transfer.cut_reason is None
        now[0] = 6.0
        assert wait_until(lambda: transfer.cut_reason == "deadline", timeout_s=5)
    transfers.close()
    assert transfers.in_flight() == 0
