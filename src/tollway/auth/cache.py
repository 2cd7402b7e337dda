"""The API-key lookup cache: records by key digest (never by the key itself)."""

from tollway.auth.records import KeyRecord
from tollway.lookup_cache import LookupCache

KeyCache = LookupCache[KeyRecord]
