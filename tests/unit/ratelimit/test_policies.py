"""Policies, the bucket-count rule, and reset/retry numbers computed by hand."""

from __future__ import annotations

import pytest

from tollway.ratelimit import MemoryLimiter, QuotaPolicy, WindowPolicy, bucket_count
from tollway.ratelimit.model import free_ms
from tollway.ratelimit.verdict import NEVER


@pytest.mark.parametrize(
    ("window_ms", "buckets", "bucket_ms"),
    [
        (10, 10, 1),
        (100, 50, 2),
        (1000, 50, 20),
        (2000, 50, 40),
        (60_000, 60, 1000),
        (3_600_000, 60, 60_000),
        (86_400_000, 60, 1_440_000),
        (70, 35, 2),
    ],
)
def test_bucket_count_is_the_largest_divisor_in_10_to_60(window_ms: int, buckets: int, bucket_ms: int) -> None:
    policy = WindowPolicy.sliding("w", 10, window_ms)
    assert (policy.buckets, policy.bucket_ms) == (buckets, bucket_ms)
    assert bucket_count(window_ms) == buckets


@pytest.mark.parametrize("window_ms", [0, 5, 9, 1001, 12_345])
def test_windows_that_do_not_split_into_10_to_60_buckets_are_refused(window_ms: int) -> None:
    with pytest.raises(ValueError, match="multiple of 10 ms"):
        bucket_count(window_ms)


def test_invalid_policies() -> None:
    with pytest.raises(ValueError, match="whole-ms buckets"):
        WindowPolicy("w", 1, 1000, 7)
    with pytest.raises(ValueError, match="limit"):
        WindowPolicy("w", -1, 1000, 10)
    with pytest.raises(ValueError, match="name"):
        WindowPolicy("a b", 1, 1000, 10)
    with pytest.raises(ValueError, match="end after"):
        QuotaPolicy("q", 1, 10, 10)


def test_enforced_and_window_seconds() -> None:
    assert WindowPolicy("w", 1, 1500, 10).window_s == 2
    assert not WindowPolicy("w", 1, 1000, 10, hard=False).enforced
    assert not WindowPolicy("w", 1, 1000, 10, shadow=True).enforced
    assert QuotaPolicy("q", 1, 0, 86_400_000).window_s == 86_400


def test_free_ms_by_hand() -> None:
    policy = WindowPolicy("w", 5, 1000, 10)  # g = 100; bucket b leaves at (b + 11) * 100
    buckets = {100: 2, 101: 1, 105: 2}  # total 5 at now = 10_550 (cur 105, counted from 95)
    assert free_ms(buckets, 5, 0, 5, policy, 10_550) == 0
    assert free_ms(buckets, 5, 1, 5, policy, 10_550) == 11_100 - 10_550  # bucket 100 leaves
    assert free_ms(buckets, 5, 2, 5, policy, 10_550) == 11_100 - 10_550  # it frees 2 at once
    assert free_ms(buckets, 5, 3, 5, policy, 10_550) == 11_200 - 10_550  # bucket 101 too
    assert free_ms(buckets, 5, 4, 5, policy, 10_550) == 11_600 - 10_550  # and bucket 105
    assert free_ms(buckets, 5, 6, 5, policy, 10_550) == NEVER


def test_retry_after_is_the_latest_violated_policy() -> None:
    lim = MemoryLimiter()
    fast = WindowPolicy("fast", 1, 1000, 10)
    slow = WindowPolicy("slow", 2, 60_000, 60)
    assert lim.check("c", [fast, slow], 1, 0).admitted
    assert lim.check("c", [fast, slow], 1, 1100).admitted
    verdict = lim.check("c", [fast, slow], 1, 1200)
    assert verdict.violated == ("fast", "slow")
    # fast frees at 2200 (1000 ms later); slow needs bucket 0 gone: (0 + 61) * 1000 = 61_000.
    assert verdict.retry_after_ms == 61_000 - 1200
    assert verdict.retry_after_s == 60  # ceil(59.8)
    assert [s.reset_ms for s in verdict.states] == [1000, 59_800]
