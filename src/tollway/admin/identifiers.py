"""Path parameters and fields shared by the routes, with the patterns the domain enforces, so the
OpenAPI document says what is accepted and anything else is a 422 before a store is asked."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Path

from tollway.auth.records import IDENTIFIER_PATTERN

IDENTIFIER: Final = IDENTIFIER_PATTERN.pattern
KEY_ID: Final = r"^key_[0-9a-f]{16}$"
INVOICE_ID: Final = r"^in_[0-9a-f]{24}$"

CustomerId = Annotated[
    str, Path(pattern=IDENTIFIER, max_length=128, description="letters, digits and . _ : @ -; up to 128")
]
KeyId = Annotated[str, Path(pattern=KEY_ID, description="an API key id, `key_` and 16 hex digits")]
InvoiceId = Annotated[str, Path(pattern=INVOICE_ID, description="an invoice id, `in_` and 24 hex digits")]
