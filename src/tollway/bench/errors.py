"""The benchmark's single error type: a failed stack, a failed probe or a bad run."""


class BenchError(Exception):
    """The benchmark cannot produce trustworthy numbers; the message says why."""
