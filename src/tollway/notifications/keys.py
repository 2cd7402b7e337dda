"""The Redis layout of the outbox and the dispatcher (names only; no I/O).

Emitting (the limiter script for crossings, ``notifications.outbox`` for lifecycle events):

* ``{p}ev:{<cust>}``          stream   the customer's outbox: one entry per event (``events.Event.stream_fields``).
  In the customer's hash slot, so ``consume.lua`` appends a crossing in the same atomic call that counts it
  (Redis Cluster: one slot per script call). Events about no customer use the partition ``_``.
* ``{p}evo:{<cust>}:<event id>`` string  the once-marker: ``SET NX`` before the ``XADD``; an event whose marker
  exists is not appended again. Expires ``ONCE_TTL_MS`` after it was set, or, for a crossing, when its
  period (or window) ends plus a day, whichever is later.
* ``{p}ev:ready``              set      customers whose outbox may hold new entries: added after the append
  (not in the script: another slot); a dispatcher that finds it empty still scans every ``{p}ev:{*}``
  stream every ``TOLLWAY_OUTBOX_SCAN_S``, so an entry whose announcement was lost (``kill -9`` between the
  two) is delivered late, never lost.
* ``{p}ev:wake``               list     at most one token, pushed after each announcement (``LPUSH`` then
  ``LTRIM 0 0``): an idle dispatcher blocks on it (``BLPOP``) instead of polling the ready set, so it
  costs nothing while no event comes and reads an announced one at once.

Dispatching (one hash slot ``{wh}`` for all its keys, so its own scripts may touch them together):

* ``{p}{wh}:ep:<endpoint id>``   hash  an endpoint: url, encrypted secrets, filters, state (``endpoints.py``)
* ``{p}{wh}:eps``                set   endpoint ids
* ``{p}{wh}:event:<event id>``   string the event's stream fields as JSON, kept until its last delivery ends
  (and ``EVENT_TTL_MS`` at least, for replay from Redis; ClickHouse keeps them for good)
* ``{p}{wh}:due``                zset  ``<endpoint id>|<event id>`` → next attempt (ms): the delivery queue
* ``{p}{wh}:tries``              hash  ``<endpoint id>|<event id>`` → attempts so far
* ``{p}{wh}:lease:<member>``     string a dispatcher's claim on one delivery while it is in flight (PX)
The stream consumer group is ``GROUP`` on every outbox stream; an entry is acknowledged (``XACK``, then
``XDEL``) only after its deliveries are queued, so a dispatcher killed between the two queues them again
(the queue's members are idempotent).
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "tollway-dispatch"
NO_CUSTOMER: Final = "_"
ONCE_TTL_MS: Final = 400 * 86_400_000
EVENT_TTL_MS: Final = 7 * 86_400_000


def stream_key(prefix: str, customer_id: str) -> str:
    return f"{prefix}ev:{{{customer_id or NO_CUSTOMER}}}"


def once_key(prefix: str, customer_id: str, event_id: str) -> str:
    return f"{prefix}evo:{{{customer_id or NO_CUSTOMER}}}:{event_id}"


def ready_key(prefix: str) -> str:
    return f"{prefix}ev:ready"


def wake_key(prefix: str) -> str:
    return f"{prefix}ev:wake"


def stream_pattern(prefix: str) -> str:
    """``SCAN MATCH`` pattern of every outbox stream."""
    return f"{prefix}ev:{{*}}"


def endpoint_key(prefix: str, endpoint_id: str) -> str:
    return f"{prefix}{{wh}}:ep:{endpoint_id}"


def endpoints_key(prefix: str) -> str:
    return f"{prefix}{{wh}}:eps"


def event_key(prefix: str, event_id: str) -> str:
    return f"{prefix}{{wh}}:event:{event_id}"


def due_key(prefix: str) -> str:
    return f"{prefix}{{wh}}:due"


def tries_key(prefix: str) -> str:
    return f"{prefix}{{wh}}:tries"


def claim_key(prefix: str, member: str) -> str:
    return f"{prefix}{{wh}}:lease:{member}"


def delivery_member(endpoint_id: str, event_id: str) -> str:
    return f"{endpoint_id}|{event_id}"
