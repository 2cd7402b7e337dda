"""Tollway test suite."""
