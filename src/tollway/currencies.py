"""The currencies Tollway can bill: ISO 4217 codes and the decimal places of their minor unit.

Domain data shared by the catalog's validation (``plans.pricing``: a plan priced in any other code is
refused with its file and line) and by billing (``billing.money`` rounds to these places). A code is
here only when its minor unit is 0, 2 or 3 places and fixed; funds codes and units of account such as
CLF (4 places) or XAU are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# ISO 4217 exponents: how many decimal places each currency's minor unit has.
_TWO_PLACES: Final = (
    "AED ARS AUD BRL CAD CHF CNY COP CZK DKK EGP EUR GBP HKD HUF IDR ILS INR MAD MXN MYR NOK NZD PHP PLN RON "
    "SAR SEK SGD THB TRY TWD UAH USD ZAR"
)
_NO_PLACES: Final = "CLP ISK JPY KRW PYG UGX VND XAF XOF"
_THREE_PLACES: Final = "BHD IQD JOD KWD LYD OMR TND"

MINOR_UNITS: Final[Mapping[str, int]] = MappingProxyType(
    {
        **dict.fromkeys(_TWO_PLACES.split(), 2),
        **dict.fromkeys(_NO_PLACES.split(), 0),
        **dict.fromkeys(_THREE_PLACES.split(), 3),
    }
)
"""Currency code → number of decimal places of its minor unit (USD 2: cents; JPY 0; KWD 3: fils)."""
