"""Tollway: authenticate, entitle, meter and bill API traffic behind Envoy."""

__version__ = "0.1.0"
