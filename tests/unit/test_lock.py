"""The committed locks match pyproject.toml: a dependency added without re-locking fails here.

Installs resolve only from the locks (scripts/setup-venv, .ci/run, the images), so a requirement the
lock does not satisfy would be silently missing, or installed at a version its range refuses.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)(?: ; (.*?))?\s*\\?$")


EXCLUDED = {
    canonicalize_name(line)
    for line in (REPO / "requirements/excludes.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def _pins(lock: Path) -> dict[str, set[str]]:
    """name -> versions pinned (a universal lock can pin two, under different Python markers)."""
    pins: dict[str, set[str]] = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins.setdefault(canonicalize_name(match[1]), set()).add(match[2])
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    own = canonicalize_name(PROJECT["name"])
    found, pending, seen = [], [Requirement(r) for r in PROJECT["dependencies"]], set()
    for extra in extras:
        pending += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    while pending:
        requirement = pending.pop()
        if canonicalize_name(requirement.name) == own:  # "moderation-worker[local]": its extras too
            for extra in requirement.extras - seen:
                seen.add(extra)
                pending += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
            continue
        found.append(requirement)
    return found


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("requirements/dev.txt", ("local", "test")), ("requirements/runtime.txt", ("review", "api"))],
)
def test_every_requirement_is_locked_at_a_version_its_range_admits(lock, extras):
    pins = _pins(REPO / lock)
    problems = []
    for requirement in _requirements(*extras):
        name = canonicalize_name(requirement.name)
        if name in EXCLUDED:
            assert name not in pins, f"{name} is installed first, outside the lock, but {lock} pins it"
            continue
        versions = pins.get(name)
        if not versions:
            problems.append(f"{requirement} is not in {lock}")
        elif not all(requirement.specifier.contains(v, prereleases=True) for v in versions):
            problems.append(f"{lock} pins {name} {sorted(versions)}, outside {requirement.specifier}")
    assert not problems, "run `make lock` and commit it:\n" + "\n".join(problems)


def test_the_image_lock_holds_the_versions_ci_tests():
    dev, runtime = _pins(REPO / "requirements/dev.txt"), _pins(REPO / "requirements/runtime.txt")
    differ = {
        name: (versions, dev.get(name)) for name, versions in runtime.items() if dev.get(name) != versions
    }
    assert not differ


def test_every_pin_carries_a_hash_so_an_install_is_checked():
    for lock in ("requirements/dev.txt", "requirements/runtime.txt"):
        text = (REPO / lock).read_text()
        assert len(_pins(REPO / lock)) > 10
        for block in re.split(r"\n(?=[a-z0-9])", text.split("\n", 2)[2]):
            if "==" in block.split("\n", 1)[0]:
                assert "--hash=sha256:" in block, block.split("\n", 1)[0]


def test_the_images_install_the_torch_that_setup_and_ci_install():
    pinned = (REPO / "requirements/torch.txt").read_text()
    version = re.search(r"^torch==(\S+)$", pinned, re.M)[1]
    for dockerfile in ("docker/Dockerfile.gpu", "docker/Dockerfile.cpu"):
        text = (REPO / dockerfile).read_text()
        assert f"ARG TORCH_VERSION={version}\n" in text, dockerfile
        assert "--require-hashes --no-deps -r /tmp/requirements/runtime.txt" in text, dockerfile
