"""What an operator sees of a running Tollway: Prometheus metrics (``metrics``)."""
