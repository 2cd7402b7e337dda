"""``make bench``: bounded load through a real Envoy, with and without ext_authz, in one run.

Rows (every Envoy route is a ``direct_response``, so no upstream work is measured):

- ``A``  Envoy alone (no ext_authz filter);
- ``B``  Envoy + gRPC ext_authz to a no-op ``grpc.aio`` server;
- ``H``  Envoy + HTTP ext_authz to a no-op server on Tollway's own HTTP stack;
- ``C``  Envoy + HTTP ext_authz to ``tollway serve`` checking a real API key (Valkey behind it);
- ``Cg`` the same Tollway over gRPC;
- ``D``  ``C`` plus stage 2: the bench catalog (``catalog.yaml``) grants the route through a feature, with
  two rate limits and a monthly quota that never refuse, so every request costs one limiter check; the
  Redis round trips per admitted request are counted by Valkey (``redis_stats``);
- ``E``  ``D`` plus stage 3, metering, as deployed: ``tollway serve`` writes every decision to a spool, and
  ``tollway meter`` takes Envoy's gRPC access log and loads the spool into an embedded ClickHouse (chdb);
  its ``/healthz`` must show every written row loaded (``metering_stats``);
- ``Dn`` ``D`` with alert thresholds (50/80/100 %) on every limit and quota and a webhook dispatcher
  (``tollway dispatch``) running beside; target ≥ 0.95 × ``D``. Not run by default until the catalog's
  ``alerts:`` syntax is merged (``--scenarios …,Dn``).

Every row but ``E`` runs without the template's access log and the ext_authz dynamic metadata only it
reads (no row has a log server but ``E``). Apart
from the rows, ``--loader`` (on by default) measures the loader's throughput: a spool of realistic usage
rows drained into a fresh embedded ClickHouse in a subprocess (``loader_throughput``); ``--webhooks`` (on by
default) the webhook dispatcher delivering to a local receiver (``webhook_throughput``, ``webhooks_per_s``).

Run ``python -m tollway.bench --help``.
"""
