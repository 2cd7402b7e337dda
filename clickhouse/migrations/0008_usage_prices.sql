-- What a request cost at admission (issue 14: money at the gateway). `price_micros` is the request's
-- real-time price in micro-units (10^-6) of `balance_unit`: burned from the customer's prepaid balance when
-- `balance_unit` is set, or counted against a postpaid spend cap when it is empty. 0 for requests without a
-- real-time charge, and for every row written before this version. These rows are the burn entries of the
-- credits ledger (`tollway credits reconcile` sums them).
ALTER TABLE {database}.usage
    ADD COLUMN IF NOT EXISTS price_micros Int64 DEFAULT 0;

ALTER TABLE {database}.usage
    ADD COLUMN IF NOT EXISTS balance_unit LowCardinality(String) DEFAULT '';

-- A view's columns are fixed when it is created: recreate `usage_final` (SELECT *) to show the new ones.
CREATE OR REPLACE VIEW {database}.usage_final AS
SELECT *
FROM {database}.usage FINAL;
