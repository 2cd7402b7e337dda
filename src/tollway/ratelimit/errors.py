"""Typed limiter failures. They carry no HTTP status: the edge maps them (503, fail closed)."""

from __future__ import annotations


class LimiterUnavailable(Exception):
    """The counters could not be read or updated (Redis down, timed out, or answered garbage).

    Not the caller's fault, and nothing is known about whether the check was counted: refuse with 503.
    """

    reason = "limiter-unavailable"
