"""Names of Envoy dynamic metadata Tollway reads and writes, shared by the access-log stream and the body meter.

``AUTHZ_NAMESPACE``: where ext_authz puts Tollway's x-tollway-* verdict headers (``dynamic_metadata_from_headers``
over HTTP, ``dynamic_metadata`` over gRPC). ``METERS_NAMESPACE``: where the body meter puts the quantities it read
from a response body (meter name → decimal string).
"""

from typing import Final

AUTHZ_NAMESPACE: Final = "envoy.filters.http.ext_authz"
METERS_NAMESPACE: Final = "tollway.meters"
