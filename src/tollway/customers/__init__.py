"""Customer records (``customers.store``): what an operator says about a customer — display name, email
and the billing details an invoice names the buyer by. A store, read by the admin API (a face) and by
billing (a stage) when it finalizes invoices; never on the request path."""

from tollway.customers.store import BillingDetails, CustomerRecord, RedisCustomerStore

__all__ = ["BillingDetails", "CustomerRecord", "RedisCustomerStore"]
