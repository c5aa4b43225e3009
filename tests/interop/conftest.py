"""Fixtures of the namespace tests, and the interop matrix printed at the end of the run.

Each test builds its own topology in a :class:`~tests.interop.netns.Lab` and the fixture's finalizer
tears it down, passed or failed. Tests that are cells of the matrix carry ``@pytest.mark.cell(row,
letter, what)``; the run prints one line per row with the letter of every passing cell, ``-`` for a
failed one and ``.`` for one skipped or not run -- the way aioquic's interop runner reports
implementation pairs.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop import matrix
from tests.interop.netns import Lab, skip_reason


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "interop: needs root; builds network namespaces (and strongSwan peers)")
    config.addinivalue_line("markers", "cell(row, letter, what): this test is one cell of the interop matrix")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("cell")
        if marker is not None:
            matrix.declare(*marker.args, **marker.kwargs)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    marker = item.get_closest_marker("cell")
    if marker is None:
        return
    row, letter = marker.args[0], marker.args[1]
    if report.when == "call" or (report.when == "setup" and not report.passed):
        matrix.record(row, letter, "pass" if report.passed else "skip" if report.skipped else "fail")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = matrix.render()
    if lines:
        terminalreporter.write_sep("=", "interop matrix")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    the_lab = Lab(tmp_path)
    try:
        yield the_lab
    finally:
        the_lab.close()
