"""Errors raised by the local-stack harness."""


class HarnessError(Exception):
    """A local stack could not be configured, started or queried."""


class ProcessExitedError(HarnessError):
    """A managed process exited while we were waiting for it to become ready."""


class ReadinessTimeoutError(HarnessError):
    """A managed process did not become ready within its deadline."""
