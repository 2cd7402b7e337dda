"""Integration tests: real Valkey, Envoy, chdb and subprocesses on loopback."""
