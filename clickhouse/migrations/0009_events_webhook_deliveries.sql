-- Webhook events and their delivery attempts (src/tollway/notifications/history.py; docs/notifications-delivery.md).
-- Rows come from the dispatcher's history buffer in Redis, which may hand a row over twice after a crash
-- (inserted, then killed before trimming the buffer): ReplacingMergeTree on each table's key keeps one, and
-- every reader uses FINAL. Not partitioned: rows of one key must meet in one part for FINAL.

-- One row per event (its id is deterministic: the same event is the same row however often it is read).
CREATE TABLE IF NOT EXISTS {database}.events
(
    id          String,
    type        LowCardinality(String),
    ts          DateTime64(3, 'UTC'),     -- when it happened
    customer_id String,                   -- '' for events about no customer (endpoint.disabled)
    data        String,                   -- the JSON body (docs/notifications.md), without customer_id
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY (customer_id, id);

-- One row per attempt to deliver an event to an endpoint; attempt_id is the attempt's claim token (unique).
CREATE TABLE IF NOT EXISTS {database}.webhook_deliveries
(
    endpoint_id String,
    event_id    String,
    attempt_id  String,
    attempt     UInt16,                   -- 1 = the first attempt of the schedule (a replay starts again at 1)
    ts          DateTime64(3, 'UTC'),     -- when the attempt ended
    status      UInt16,                   -- HTTP status; 0: no response (timeout, refused, not attempted)
    outcome     LowCardinality(String),   -- delivered, retry, failed (given up), dropped (not attempted)
    duration_ms UInt32,
    error       String,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY (endpoint_id, event_id, attempt_id);
