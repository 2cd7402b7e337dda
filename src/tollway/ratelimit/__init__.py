"""Stage 2, *may they, right now?*: every rate limit and the period quota of a request, checked and
consumed at once (all or nothing) in one Redis round trip.

``MemoryLimiter`` (``model.py``) is the pure reference; ``RedisLimiter`` (``redis_limiter.py``) runs the
same semantics as one Lua script per check, and ``PipelineCoalescer`` sends the checks of one event-loop
iteration as one pipeline. See docs/decisions/0003-sliding-window-limits.md.
"""

from tollway.ratelimit.coalescer import PipelineCoalescer
from tollway.ratelimit.errors import LimiterUnavailable
from tollway.ratelimit.model import Limiter, MemoryLimiter, epoch_ms
from tollway.ratelimit.policies import Policy, QuotaPolicy, WindowPolicy, bucket_count
from tollway.ratelimit.redis_limiter import RedisLimiter
from tollway.ratelimit.verdict import PolicyState, Verdict

__all__ = [
    "Limiter",
    "LimiterUnavailable",
    "MemoryLimiter",
    "PipelineCoalescer",
    "Policy",
    "PolicyState",
    "QuotaPolicy",
    "RedisLimiter",
    "Verdict",
    "WindowPolicy",
    "bucket_count",
    "epoch_ms",
]
