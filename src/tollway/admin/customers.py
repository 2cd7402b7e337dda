"""Customer records moved to ``tollway.customers`` (a store billing reads too); kept here so existing
imports keep working."""

from tollway.customers.store import BillingDetails, CustomerRecord, RedisCustomerStore

__all__ = ["BillingDetails", "CustomerRecord", "RedisCustomerStore"]
