"""Stage 4, bill: turn usage into money, exactly.

* ``charges``: the pure charge models (flat, per-unit, graduated, volume, package, allowance), one
  module each, all ``price(charge, quantity, period) -> ChargeResult``.
* ``minimum``, ``discounts``: the minimum-commitment true-up and discounts/coupons.
* ``rating``: a plan's pricing + quantities per meter → ``InvoiceDraft`` (rounded lines, total).
* ``quote``: the strict entry point behind ``tollway quote``.
* ``money``: ``Decimal`` only, currencies' minor units, the one rounding rule (half to even, per line).
* ``proration``: the fraction of a billing period a span of time covers.

See docs/billing.md.
"""
