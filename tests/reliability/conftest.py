"""The reliability suite (issue 10): faults (SIGINT, SIGKILL, contention, concurrent sweeps) and bad inputs.
Every test here is marked ``reliability``; ``make test`` runs them with the rest."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.reliability)
