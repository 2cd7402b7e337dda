"""Show the log tails of a test's processes in the pytest report when the test fails.

Function-scoped fixtures register their processes on the test item; session-scoped fixtures register
on the session under their fixture name, and their logs are shown only for tests that use that fixture.
"""

import pytest

from tollway.harness.processes import LogSource

TAIL_LINES = 40

_TEST_SOURCES = pytest.StashKey[list[LogSource]]()
_SESSION_SOURCES = pytest.StashKey[dict[str, list[LogSource]]]()


def register_for_test(item: pytest.Item, source: LogSource) -> None:
    item.stash.setdefault(_TEST_SOURCES, []).append(source)


def register_for_session(config: pytest.Config, fixture_name: str, source: LogSource) -> None:
    config.stash.setdefault(_SESSION_SOURCES, {}).setdefault(fixture_name, []).append(source)


def sources_for(item: pytest.Item) -> list[LogSource]:
    sources: list[LogSource] = []
    fixture_names = set(getattr(item, "fixturenames", ()))
    for fixture_name, registered in item.config.stash.get(_SESSION_SOURCES, {}).items():
        if fixture_name in fixture_names:
            sources.extend(registered)
    for_test: list[LogSource] = item.stash.get(_TEST_SOURCES, [])
    sources.extend(for_test)
    return sources


def attach_log_tails(item: pytest.Item, report: pytest.TestReport) -> None:
    if not report.failed:
        return
    for source in sources_for(item):
        tail = source.log_tail(TAIL_LINES) or "(empty log)\n"
        report.sections.append((f"{source.name} log, last {TAIL_LINES} lines ({report.when})", tail))
