"""In CI nothing the README promises may be skipped: a pytest plugin (loaded by tests/conftest.py) that fails
the session when a test was skipped for any reason but a missing GPU.

Active when CI or EVALKIT_STRICT_SKIPS is "1"/"true" (.ci/run sets CI=true); elsewhere a skip stays a skip
(a laptop without chromium or lmms-eval). The allowed reasons are the GPU tests' (marked ``gpu``, skipped
with a reason naming the GPU or CUDA).
"""

from __future__ import annotations

import os
import re

import pytest

ALLOWED = re.compile(r"\b(gpu|cuda)\b", re.IGNORECASE)


def strict() -> bool:
    value = os.environ.get("EVALKIT_STRICT_SKIPS") or os.environ.get("CI") or ""
    return value.strip().lower() in ("1", "true", "yes")


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not strict():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    refused = [r for r in skipped if not ALLOWED.search(skip_reason(r))]
    if not refused:
        return
    for report in refused:
        reporter.write_line(f"skipped in CI (only a missing GPU may skip): {report.nodeid}: {skip_reason(report)}",
                            red=True)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
