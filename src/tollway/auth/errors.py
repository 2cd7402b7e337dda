"""Typed authentication failures. They carry no HTTP or gRPC status: the edge maps them."""

from __future__ import annotations


class AuthError(Exception):
    """The caller could not be identified. ``reason`` is a stable slug for logs, problems and metrics."""

    reason = "unauthenticated"
    detail = "The request could not be authenticated."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail


class MissingCredential(AuthError):
    reason = "missing-credentials"
    detail = "No API key was sent. Send it as 'Authorization: Bearer <key>' or in the 'x-api-key' header."


class MalformedKey(AuthError):
    reason = "malformed-api-key"
    detail = "The API key is not well formed or its checksum does not match; check it was copied whole."


class UnknownKey(AuthError):
    reason = "invalid-api-key"
    detail = "The API key is not known."


class RevokedKey(AuthError):
    reason = "revoked-api-key"
    detail = "The API key has been revoked."


class ExpiredKey(AuthError):
    reason = "expired-api-key"
    detail = "The API key has expired."


class CredentialStoreUnavailable(Exception):
    """The key store could not answer in time. Not the caller's fault: the edge answers 503 with ``detail``."""

    reason = "credential-store-unavailable"
    detail = "The credential store did not answer in time. Retry shortly."


class KeyNotFound(LookupError):
    """A management operation named a key id that does not exist."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")
        self.key_id = key_id
