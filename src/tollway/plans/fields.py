"""Field types shared by the catalog models: strict base model, identifiers, money, counts."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

_IDENTIFIER: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MONEY_TEXT: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
MONEY_MAX_PLACES: Final = 12


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


def _identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise PydanticCustomError(
            "identifier",
            "must be an identifier: lower-case letters, digits, '_' and '-', starting with a letter or digit",
        )
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
"""Names of meters, features, plans, limits, charges: ``[a-z0-9][a-z0-9_-]*``."""


def _money(value: object) -> Decimal:
    if isinstance(value, float):  # only from data built in Python: the YAML loader turns floats into Decimal
        raise PydanticCustomError("money_float", 'money must not be a binary float: write it as a string, e.g. "0.10"')
    if isinstance(value, str):
        if not _MONEY_TEXT.fullmatch(value):
            raise PydanticCustomError(
                "money_text", 'money must be a plain decimal such as "49.00" (no sign, no exponent)'
            )
        return Decimal(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise PydanticCustomError("money_type", 'money must be a decimal string such as "49.00"')
    if not value.is_finite() or value < 0:
        raise PydanticCustomError("money_range", "money must be a finite amount ≥ 0")
    return value


def _money_places(value: Decimal) -> Decimal:
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_MAX_PLACES:
        raise PydanticCustomError("money_places", f"money has at most {MONEY_MAX_PLACES} decimal places")
    return value


Money = Annotated[Decimal, BeforeValidator(_money), AfterValidator(_money_places)]
"""An amount ≥ 0. Written as a string ("49.00"); an integer or an unquoted YAML decimal is taken exactly
as written (the loader builds it from the source text), never through a binary float."""

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
