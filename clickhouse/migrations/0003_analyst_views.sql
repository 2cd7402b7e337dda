-- Analyst views. Every one reads deduplicated data: `usage FINAL` (the highest version of each
-- request, replays collapsed) or `usage_hourly FINAL WHERE requests > 0` (the exact rollup).
-- Days and months are UTC.

-- The deduplicated usage rows: what `usage` holds once every part has merged.
CREATE VIEW IF NOT EXISTS {database}.usage_final AS
SELECT *
FROM {database}.usage FINAL;

-- Per UTC day, customer, feature and meter: requests that carried the meter and its total quantity.
-- Requests with an empty meters map count under meter ''. From the hourly rollup, so it is as
-- current as the last refresh_rollups run (`tollway.warehouse.rollups`).
CREATE VIEW IF NOT EXISTS {database}.daily_usage AS
SELECT
    day,
    customer_id,
    feature,
    meter,
    sum(group_requests) AS requests,
    sum(group_quantity) AS quantity
FROM
(
    SELECT toDate(hour, 'UTC') AS day, customer_id, feature, meter,
           requests AS group_requests, quantity AS group_quantity
    FROM {database}.usage_hourly FINAL
    WHERE requests > 0
)
GROUP BY day, customer_id, feature, meter;

-- Per UTC day and customer: requests (admitted and refused), those whose response was never
-- reported (status 0), 4xx and 5xx responses, and the error rates over all requests.
CREATE VIEW IF NOT EXISTS {database}.error_rates AS
SELECT
    toDate(ts, 'UTC')                         AS day,
    customer_id,
    count()                                   AS requests,
    countIf(status = 0)                       AS unreported,
    countIf(status >= 400 AND status < 500)   AS errors_4xx,
    countIf(status >= 500 AND status < 600)   AS errors_5xx,
    errors_4xx / requests                     AS rate_4xx,
    errors_5xx / requests                     AS rate_5xx
FROM {database}.usage FINAL
GROUP BY day, customer_id;

-- Per UTC month, authenticated customers by requests (admitted and refused), busiest first, with
-- admitted requests and meter_totals (a map: meter -> total quantity).
CREATE VIEW IF NOT EXISTS {database}.top_customers AS
SELECT
    toStartOfMonth(ts, 'UTC')          AS month,
    customer_id,
    count()                            AS requests,
    countIf(outcome = 'admitted')      AS admitted,
    sumMap(meters)                     AS meter_totals
FROM {database}.usage FINAL
WHERE customer_id != ''
GROUP BY month, customer_id
ORDER BY month DESC, requests DESC, customer_id ASC;

-- Refusals per UTC day, reason and customer ('' = unauthenticated caller), most frequent first.
CREATE VIEW IF NOT EXISTS {database}.refused_by_reason AS
SELECT
    toDate(ts, 'UTC') AS day,
    reason,
    customer_id,
    count()           AS refusals
FROM {database}.usage FINAL
WHERE outcome = 'refused'
GROUP BY day, reason, customer_id
ORDER BY day ASC, refusals DESC, reason ASC, customer_id ASC;
