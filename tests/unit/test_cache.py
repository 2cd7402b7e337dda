from datetime import UTC, datetime

from tollway.auth.cache import KeyCache
from tollway.auth.records import KeyRecord, KeyStatus
from tollway.clock import ManualClock

RECORD = KeyRecord("key_1", "acme", "live", KeyStatus.ACTIVE, datetime(2026, 1, 1, tzinfo=UTC), None, "abcd")


def test_entries_expire_after_ttl() -> None:
    clock = ManualClock()
    cache = KeyCache(clock.monotonic, ttl=1.0, negative_ttl=0.5)
    cache.put("d1", RECORD)
    cache.put("d2", None)
    hit = cache.get("d1")
    assert hit is not None
    assert hit.record == RECORD
    miss = cache.get("d2")
    assert miss is not None
    assert miss.record is None
    clock.advance(0.6)
    assert cache.get("d2") is None
    assert cache.get("d1") is not None
    clock.advance(0.5)
    assert cache.get("d1") is None


def test_bounded_size_evicts_oldest() -> None:
    clock = ManualClock()
    cache = KeyCache(clock.monotonic, max_entries=2)
    cache.put("a", RECORD)
    cache.put("b", RECORD)
    cache.put("c", RECORD)
    assert len(cache) == 2
    assert cache.get("a") is None
    assert cache.get("c") is not None


def test_evict_and_clear() -> None:
    cache = KeyCache(ManualClock().monotonic)
    cache.put("a", RECORD)
    cache.put("b", RECORD)
    cache.evict("a")
    assert cache.get("a") is None
    cache.clear()
    assert len(cache) == 0


def test_zero_ttl_disables_caching() -> None:
    cache = KeyCache(ManualClock().monotonic, ttl=0, negative_ttl=0)
    cache.put("a", RECORD)
    assert cache.get("a") is None
