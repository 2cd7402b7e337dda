"""Run local Tollway stacks (Valkey, Envoy, Tollway, a demo upstream) on loopback ports.

Used by the pytest fixtures, ``make demo`` and ``make bench``. Everything here is synchronous
and process-oriented; nothing is meant for production serving.
"""

from tollway.harness.errors import HarnessError, ProcessExitedError, ReadinessTimeoutError

__all__ = ["HarnessError", "ProcessExitedError", "ReadinessTimeoutError"]
