"""Notifications: events (threshold crossings and lifecycle changes), their durable outbox in Redis, and
their signed delivery to registered webhook endpoints (docs/notifications.md)."""
