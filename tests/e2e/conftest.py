"""The end-to-end tests' `new_deployment` fixture is tests/conftest.py's (shared with the chaos
and `serve` tests): fresh databases and deployments that are always torn down."""

from __future__ import annotations

from tests.e2e.harness import DeploymentFactory

__all__ = ["DeploymentFactory"]
