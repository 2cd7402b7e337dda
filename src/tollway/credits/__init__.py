"""Money at the gateway: balances in fixed-point units, grants and their burn order, and the marginal
price of one request under a plan's charge model. Pure domain code: no I/O, times are passed in.

Every amount Tollway keeps in Redis is an integer count of *micro-units* of a balance unit (a currency
such as USD, or a credit unit the catalog defines): 1 unit = ``MICROS`` micro-units. Python code holds
money as ``decimal.Decimal`` and converts exactly at the edge of Redis (``units.to_micros``), never
through a float. See docs/credits.md and docs/decisions/0006-money-in-the-limiter-script.md.
"""
