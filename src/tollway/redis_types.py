"""The Redis client type the adapters accept: a single server or a Redis Cluster."""

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

RedisClient = Redis | RedisCluster
