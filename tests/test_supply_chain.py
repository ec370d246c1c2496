"""The hash-locked requirements and the SBOM agree with pyproject.toml and with each other.

When this fails after a dependency changed, run `.ci/lock` (docs/security.md, supply chain).
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;\\]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$"
)
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}\s*\\?$")


def read_lock(name: str) -> dict[str, tuple[str, str | None]]:
    """{canonical name: (version, marker)} of a lock file; every pin must carry hashes."""
    pins: dict[str, tuple[str, str | None]] = {}
    current = None
    hashes: dict[str, int] = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match["name"])
            assert current not in pins, f"{name}: {current} pinned twice"
            pins[current] = (match["version"], match["marker"])
            hashes[current] = 0
            continue
        assert HASH.match(line), f"{name}: unexpected line {line!r}"
        assert current is not None
        hashes[current] += 1
    assert pins, f"{name} pins nothing"
    assert all(hashes.values()), (
        f"{name}: pins without a hash: {[n for n, c in hashes.items() if not c]}"
    )
    return pins


RUNTIME = read_lock("requirements.lock")
DEV = read_lock("requirements-dev.lock")


def _satisfied(lock: dict[str, tuple[str, str | None]], requirement: str, where: str) -> None:
    wanted = Requirement(requirement)
    name = canonicalize_name(wanted.name)
    assert name in lock, f"{where}: {wanted.name} is not in the lock; run .ci/lock"
    pinned = lock[name][0]
    assert wanted.specifier.contains(pinned, prereleases=True), (
        f"{where}: {wanted.name}=={pinned} is outside {wanted.specifier}; run .ci/lock"
    )


@pytest.mark.parametrize("requirement", PYPROJECT["project"]["dependencies"])
def test_the_runtime_lock_meets_each_dependency_range(requirement: str) -> None:
    _satisfied(RUNTIME, requirement, "requirements.lock")
    _satisfied(DEV, requirement, "requirements-dev.lock")


@pytest.mark.parametrize("requirement", PYPROJECT["project"]["optional-dependencies"]["dev"])
def test_the_dev_lock_meets_each_dev_range(requirement: str) -> None:
    _satisfied(DEV, requirement, "requirements-dev.lock")


@pytest.mark.parametrize("requirement", PYPROJECT["build-system"]["requires"])
def test_the_build_backend_is_locked(requirement: str) -> None:
    _satisfied(RUNTIME, requirement, "requirements.lock")
    _satisfied(DEV, requirement, "requirements-dev.lock")


def test_the_dev_lock_pins_the_runtime_packages_alike() -> None:
    assert {name: DEV[name][0] for name in RUNTIME} == {n: v for n, (v, _) in RUNTIME.items()}


def test_the_environment_was_installed_from_the_lock() -> None:
    """CI installs with `pip install --require-hashes -r requirements-dev.lock`."""
    different = {}
    for name, (pinned, marker) in DEV.items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            different[name] = (pinned, installed)
    assert different == {}, "installed (pinned, found) differ; reinstall from the lock"


def test_the_sbom_lists_exactly_the_runtime_lock() -> None:
    sbom = json.loads((ROOT / "sbom.cdx.json").read_text(encoding="utf-8"))
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"].startswith("1.")
    root = sbom["metadata"]["component"]
    assert (root["name"], root["version"]) == ("handover", PYPROJECT["project"]["version"])
    listed = {canonicalize_name(c["name"]): c["version"] for c in sbom["components"]}
    assert listed == {name: v for name, (v, _) in RUNTIME.items()}
    for component in sbom["components"]:
        assert component["purl"] == f"pkg:pypi/{component['name']}@{component['version']}"
        hashes = [h for ref in component["externalReferences"] for h in ref.get("hashes", [])]
        assert hashes and all(h["alg"] == "SHA-256" for h in hashes), component["name"]
