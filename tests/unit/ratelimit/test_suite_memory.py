"""The shared limiter behaviour suite on the in-memory model."""

import asyncio

import pytest

from tests.support.limiter_suite import SCENARIOS, Scenario
from tollway.ratelimit import MemoryLimiter


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_memory_limiter(scenario: Scenario) -> None:
    asyncio.run(scenario(MemoryLimiter()))
