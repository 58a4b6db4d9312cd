"""Shared fixtures for the sandbox tests: a task-like layout and warm farms."""

from __future__ import annotations

import pytest

from sandmle.sandbox import SandboxFarm
from sandbox_helpers import farm_config, make_task


@pytest.fixture(scope="session")
def farm():
    with SandboxFarm(farm_config()) as f:
        yield f


@pytest.fixture
def task(tmp_path):
    return make_task(str(tmp_path))


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: long mixed-job soak of the sandbox farm (~1 min)")
