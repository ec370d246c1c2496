"""Fixtures of the end-to-end tests: fresh databases and deployments that are always torn down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import DeploymentFactory, deployments

__all__ = ["DeploymentFactory", "new_deployment"]


@pytest.fixture
def new_deployment(tmp_path: Path) -> Iterator[DeploymentFactory]:
    """`new_deployment(backend, start)`: a deployed rota, stand-in and clock; stopped after."""
    with deployments(tmp_path) as make:
        yield make
