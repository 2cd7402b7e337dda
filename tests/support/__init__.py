"""Test-only helpers behind the fixtures in ``tests/conftest.py``."""
