"""Health endpoints and metrics, over real HTTP on a loopback port."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from moderation_worker.errors import ErrorCode
from moderation_worker.health import HealthState
from moderation_worker.health_server import HealthServer
from moderation_worker.metrics import WorkerMetrics

# Ignore any proxy in the environment: these requests go to loopback.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def get(server: HealthServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(server.url + path, headers=headers or {})
    try:
        with _opener.open(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def get_json(server: HealthServer, path: str) -> tuple[int, dict]:
    status, content_type, body = get(server, path)
    assert content_type == "application/json"
    return status, json.loads(body)


def scrape(server: HealthServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics as {(sample name, sorted labels): value}."""
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def ready_state(clock: FakeClock | None = None, **kwargs: object) -> HealthState:
    state = HealthState(clock=clock or FakeClock(), **kwargs)
    state.beat()
    state.set_broker_connected(True)
    state.set_assignment(3)
    state.set_model_loaded(True)
    return state


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def state(clock: FakeClock) -> HealthState:
    return ready_state(clock, stall_after_s=30.0)


@pytest.fixture
def server(state: HealthState, metrics: WorkerMetrics) -> Iterator[HealthServer]:
    with HealthServer(state, metrics, "127.0.0.1", 0) as running:
        yield running


def test_metrics_endpoint_serves_what_the_worker_recorded(
    server: HealthServer, metrics: WorkerMetrics
) -> None:
    # Given a worker that finished some events and timed its stages
    metrics.record_outcome("result", decision="allow")
    metrics.record_outcome("result", decision="allow")
    metrics.record_outcome("result", decision="block")
    metrics.record_outcome("dead_letter", code=ErrorCode.CORRUPT_IMAGE)
    metrics.record_outcome("retry")
    metrics.observe_stage("fetch", 0.004)
    metrics.observe_stage("score", 2.0)
    with metrics.time_stage("publish"):
        pass
    metrics.cache_lookup("feature", hit=True)
    metrics.cache_lookup("feature", hit=False)
    metrics.cache_lookup("verdict", hit=False)
    metrics.set_cache_size("feature", entries=7, size_bytes=123_456)
    metrics.set_cache_size("verdict", entries=42)
    metrics.observe_batch(16)
    metrics.set_in_flight(5)
    metrics.record_retry("s3_timeout")
    metrics.record_retry("s3_timeout")
    metrics.set_held_partitions(2)
    metrics.set_model_load_seconds(12.5)

    # I expect a scrape to show each of them
    samples = scrape(server)
    assert samples["moderation_events_total", (("decision", "allow"), ("outcome", "result"))] == 2
    assert samples["moderation_events_total", (("decision", "block"), ("outcome", "result"))] == 1
    assert samples["moderation_events_total", (("decision", "none"), ("outcome", "dead_letter"))] == 1
    assert samples["moderation_events_total", (("decision", "none"), ("outcome", "retry"))] == 1
    assert samples["moderation_dead_letters_total", (("code", "corrupt_image"),)] == 1
    assert samples["moderation_stage_duration_seconds_count", (("stage", "fetch"),)] == 1
    assert samples["moderation_stage_duration_seconds_sum", (("stage", "score"),)] == 2.0
    assert samples["moderation_stage_duration_seconds_bucket", (("le", "0.005"), ("stage", "fetch"))] == 1
    assert samples["moderation_stage_duration_seconds_bucket", (("le", "1.0"), ("stage", "score"))] == 0
    assert samples["moderation_stage_duration_seconds_bucket", (("le", "300.0"), ("stage", "score"))] == 1
    assert samples["moderation_stage_duration_seconds_count", (("stage", "publish"),)] == 1
    assert samples["moderation_cache_hits_total", (("cache", "feature"),)] == 1
    assert samples["moderation_cache_misses_total", (("cache", "feature"),)] == 1
    assert samples["moderation_cache_misses_total", (("cache", "verdict"),)] == 1
    assert samples["moderation_cache_size_bytes", (("cache", "feature"),)] == 123_456
    assert samples["moderation_cache_entries", (("cache", "feature"),)] == 7
    assert samples["moderation_cache_entries", (("cache", "verdict"),)] == 42
    assert ("moderation_cache_size_bytes", (("cache", "verdict"),)) not in samples
    assert samples["moderation_batch_size_events_count", ()] == 1
    assert samples["moderation_batch_size_events_bucket", (("le", "16.0"),)] == 1
    assert samples["moderation_batch_size_events_bucket", (("le", "8.0"),)] == 0
    assert samples["moderation_in_flight_events", ()] == 5
    assert samples["moderation_retries_total", (("reason", "s3_timeout"),)] == 2
    assert samples["moderation_held_partitions", ()] == 2
    assert samples["moderation_model_load_seconds", ()] == 12.5


def test_the_model_and_its_scoring_strategy_are_one_info_series(metrics: WorkerMetrics) -> None:
    metrics.set_model_info(model="m", revision="r1", dtype="bfloat16", device="cuda:0", strategy="plain")
    metrics.set_model_info(
        model="m", revision="r2", dtype="bfloat16", device="cuda:0", strategy="shared_prefix"
    )
    body, _ = metrics.exposition()
    lines = [line for line in body.decode().splitlines() if line.startswith("moderation_model_info{")]
    assert lines == [
        'moderation_model_info{device="cuda:0",dtype="bfloat16",model="m",revision="r2",'
        'strategy="shared_prefix"} 1.0'
    ]


def test_known_series_are_exported_at_zero_before_any_traffic(server: HealthServer) -> None:
    samples = scrape(server)
    for decision in ("allow", "review", "block"):
        assert samples["moderation_events_total", (("decision", decision), ("outcome", "result"))] == 0
    for stage in ("fetch", "decode", "score", "publish", "commit", "batch"):
        assert samples["moderation_stage_duration_seconds_count", (("stage", stage),)] == 0
    for cache in ("feature", "verdict"):
        assert samples["moderation_cache_hits_total", (("cache", cache),)] == 0
        assert samples["moderation_cache_misses_total", (("cache", cache),)] == 0


def test_metrics_are_served_as_openmetrics_when_the_scraper_asks(server: HealthServer) -> None:
    status, content_type, body = get(server, "/metrics", {"Accept": "application/openmetrics-text"})
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_unknown_label_values_raise_instead_of_creating_series(metrics: WorkerMetrics) -> None:
    with pytest.raises(ValueError, match="outcome"):
        metrics.record_outcome("published")
    with pytest.raises(ValueError, match="decision"):
        metrics.record_outcome("result", decision="maybe")
    with pytest.raises(ValueError, match="dead_letter"):
        metrics.record_outcome("result", decision="allow", code="corrupt_image")
    with pytest.raises(ValueError, match="result"):
        metrics.record_outcome("retry", decision="allow")
    with pytest.raises(ValueError, match="stage"):
        metrics.observe_stage("download", 1.0)
    with pytest.raises(ValueError, match="cache"):
        metrics.cache_lookup("image", hit=True)


def test_two_worker_metrics_in_one_process_do_not_clash() -> None:
    # Given two workers' metrics in one process (a shared registry would raise "Duplicated timeseries")
    first, second = WorkerMetrics(), WorkerMetrics()

    first.record_outcome("result", decision="review")

    # I expect each to count only its own events, and the global registry to stay untouched
    def reviews(metrics: WorkerMetrics) -> float | None:
        return metrics.registry.get_sample_value(
            "moderation_events_total", {"outcome": "result", "decision": "review"}
        )

    assert reviews(first) == 1
    assert reviews(second) == 0
    assert prometheus_client.REGISTRY.get_sample_value("moderation_events_total") is None


def test_gpu_memory_is_read_from_torch_only_once_cuda_is_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = WorkerMetrics()

    # Given no torch in the process: no GPU samples, and nothing imports torch
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert (
        metrics.registry.get_sample_value("moderation_gpu_memory_allocated_bytes", {"device": "cuda:0"})
        is None
    )
    assert "torch" not in sys.modules

    # Given a torch whose CUDA is initialised on two devices: one sample per device
    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        is_initialized=lambda: True,
        device_count=lambda: 2,
        memory_allocated=lambda index: 1000 * (index + 1),
        memory_reserved=lambda index: 4000 * (index + 1),
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    sample = metrics.registry.get_sample_value
    assert sample("moderation_gpu_memory_allocated_bytes", {"device": "cuda:0"}) == 1000
    assert sample("moderation_gpu_memory_reserved_bytes", {"device": "cuda:1"}) == 8000

    # Given CUDA available but never initialised by the model: nothing, and no context is created
    cuda.is_initialized = lambda: False
    assert sample("moderation_gpu_memory_allocated_bytes", {"device": "cuda:0"}) is None

    # Given a probe that fails: the scrape still succeeds, without GPU samples
    cuda.is_initialized = lambda: 1 / 0
    assert b"moderation_in_flight_events" in metrics.exposition()[0]


def test_livez_goes_503_when_beats_stop_past_the_stall_threshold(
    server: HealthServer, clock: FakeClock
) -> None:
    # Given a loop that beats
    assert get_json(server, "/livez")[0] == 200

    # When it stops beating for longer than the stall threshold (30 s)
    clock.advance(29.0)
    assert get_json(server, "/livez")[0] == 200
    clock.advance(2.0)

    # I expect liveness to fail, naming the check, and readiness with it
    status, body = get_json(server, "/livez")
    assert status == 503
    assert body["failing"] == ["loop_beating"]
    assert body["seconds_since_beat"] == pytest.approx(31.0)
    assert "loop_beating" in get_json(server, "/readyz")[1]["failing"]

    # And a new beat brings it back
    server.state.beat()
    assert get_json(server, "/livez")[0] == 200


def test_livez_fails_on_the_real_clock_with_a_tiny_threshold(metrics: WorkerMetrics) -> None:
    state = HealthState(stall_after_s=0.05)
    state.beat()
    with HealthServer(state, metrics, "127.0.0.1", 0) as server:
        assert get_json(server, "/livez")[0] == 200
        time.sleep(0.1)
        assert get_json(server, "/livez")[0] == 503


def test_livez_counts_from_start_when_the_loop_never_beat(clock: FakeClock) -> None:
    # A hang while loading the model must fail liveness too
    state = HealthState(stall_after_s=10.0, clock=clock)
    assert state.liveness().ok
    clock.advance(11.0)
    report = state.liveness()
    assert not report.ok
    assert report.body["beats"] == 0


def test_readyz_is_200_when_every_check_passes(server: HealthServer) -> None:
    status, body = get_json(server, "/readyz")
    assert status == 200
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert body["partitions"] == 3
    assert body["idle"] is False


def test_readyz_names_s3_while_s3_is_failing(server: HealthServer) -> None:
    server.state.set_s3_ok(False)
    status, body = get_json(server, "/readyz")
    assert status == 503
    assert body["failing"] == ["s3_ok"]
    assert body["checks"]["s3_ok"] is False
    assert get_json(server, "/livez")[0] == 200

    server.state.set_s3_ok(True)
    assert get_json(server, "/readyz")[0] == 200


def test_readyz_names_partitions_while_none_are_assigned(server: HealthServer) -> None:
    server.state.set_assignment(0)
    status, body = get_json(server, "/readyz")
    assert status == 503
    assert body["failing"] == ["partitions_assigned"]
    assert body["idle"] is True


def test_an_idle_worker_stays_ready_when_assignment_is_not_required(clock: FakeClock) -> None:
    # Given more workers than partitions, and readiness that does not demand an assignment
    state = ready_state(clock, require_assignment=False)
    state.set_assignment(0)

    # I expect it ready, saying it is idle
    report = state.readiness()
    assert report.ok
    assert report.body["idle"] is True
    assert "partitions_assigned" not in report.body["checks"]


def test_a_fresh_state_is_not_ready_and_names_every_missing_piece(clock: FakeClock) -> None:
    report = HealthState(clock=clock).readiness()
    assert report.failing == ("broker_connected", "partitions_assigned", "model_loaded")


def test_stopping_fails_readiness_but_not_liveness(server: HealthServer) -> None:
    server.state.set_stopping()
    status, body = get_json(server, "/readyz")
    assert status == 503
    assert body["failing"] == ["not_stopping"]
    assert get_json(server, "/livez")[0] == 200


def test_unknown_paths_are_404_and_head_has_no_body(server: HealthServer) -> None:
    assert get(server, "/nope")[0] == 404
    request = urllib.request.Request(server.url + "/readyz", method="HEAD")
    with _opener.open(request, timeout=5) as response:
        assert response.status == 200
        assert response.read() == b""


def test_the_server_writes_no_access_log_lines(
    server: HealthServer, capfd: pytest.CaptureFixture[str]
) -> None:
    for path in ("/livez", "/readyz", "/metrics", "/nope"):
        get(server, path)
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_port_zero_binds_a_free_port_and_stop_frees_it(metrics: WorkerMetrics) -> None:
    server = HealthServer(HealthState(), metrics, "127.0.0.1", 0)
    server.start()
    port = server.port
    assert port != 0
    assert get(server, "/livez")[0] == 200

    server.stop()
    server.stop()  # idempotent

    # I expect nothing listening, and the port free to bind again
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with socket.socket() as probe:
        # As the server itself does: TIME_WAIT connections may remain; a listener would still refuse us.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()


def test_start_fails_loudly_when_the_port_is_taken(metrics: WorkerMetrics) -> None:
    with HealthServer(HealthState(), metrics, "127.0.0.1", 0) as first:
        second = HealthServer(HealthState(), metrics, "127.0.0.1", first.port)
        with pytest.raises(OSError):
            second.start()


def test_idle_connections_take_no_thread_and_never_lock_probes_out(metrics: WorkerMetrics) -> None:
    # Given a server allowing 64 connections, and 300 clients that connect and never send a request
    state = ready_state()
    threads_before = threading.active_count()
    with HealthServer(state, metrics, "127.0.0.1", 0, max_connections=64, request_timeout_s=30) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(300)]
        try:
            # I expect probes to be answered all the while (the idle ones are displaced, oldest first),
            # and no thread per connection
            for _ in range(20):
                assert get(server, "/livez")[0] == 200
                assert get(server, "/readyz")[0] == 200
            assert threading.active_count() <= threads_before + 2
        finally:
            for connection in idle:
                connection.close()


def test_a_connection_that_never_finishes_its_request_is_closed_after_the_timeout(
    metrics: WorkerMetrics,
) -> None:
    with HealthServer(ready_state(), metrics, "127.0.0.1", 0, request_timeout_s=0.3) as server:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            slow.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            assert slow.recv(1024) == b""  # closed by the server, without an answer
        finally:
            slow.close()


def test_many_busy_scrapers_all_get_answers_and_metrics_render_once_per_ttl(metrics: WorkerMetrics) -> None:
    # Given 16 clients scraping /metrics and probing as fast as they can
    renders = []
    exposition = metrics.exposition

    def counting(accept: str = ""):
        renders.append(accept)
        return exposition(accept)

    metrics.exposition = counting  # type: ignore[method-assign]
    failures: list[str] = []
    answered = [0]
    lock = threading.Lock()
    with HealthServer(ready_state(), metrics, "127.0.0.1", 0, metrics_ttl_s=60) as server:
        stop = threading.Event()

        def scrape(n: int) -> None:
            paths = ("/metrics", "/livez", "/readyz")
            while not stop.is_set():
                status = get(server, paths[n % 3])[0]
                with lock:
                    answered[0] += 1
                    if status != 200:
                        failures.append(str(status))
                n += 1

        clients = [threading.Thread(target=scrape, args=(n,)) for n in range(16)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30
        while answered[0] < 1500 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for client in clients:
            client.join(timeout=30)

    # I expect every request answered 200, and /metrics rendered once for all of them (the TTL)
    assert answered[0] >= 1500 and failures == []
    assert len(renders) == 1
