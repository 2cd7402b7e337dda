"""Admin scopes: ``admin:read`` reads everything; ``admin:write`` also changes it."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    READ = "admin:read"
    WRITE = "admin:write"

    def allows(self, needed: Scope) -> bool:
        return self is Scope.WRITE or needed is Scope.READ
