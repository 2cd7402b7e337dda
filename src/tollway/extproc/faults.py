"""The last-resort guard of both ext_authz servers: an exception nobody expected while deciding one check.

Client input never gets here (every refusal of a credential or a request is a typed error answered with a
4xx problem); what does is a fault of Tollway itself. It is answered with a ``500 internal-error`` problem,
the connection and the server go on, and it is logged without the exception's message (a message can
quote a header, hence a secret): its type and where it was raised, with the call stack the first time a
site fails, one line after that (a fault that every request hits must not flood the log).
"""

from __future__ import annotations

import logging
import traceback
from typing import Final

log = logging.getLogger("tollway.extproc")

_MAX_SITES: Final = 1024
_seen: set[tuple[str, str, int]] = set()


def log_unexpected(error: BaseException, request_id: str) -> None:
    """Log ``error`` (raised while deciding the check ``request_id``) once, without its message."""
    frames = traceback.extract_tb(error.__traceback__)
    kind = type(error).__qualname__
    last = frames[-1] if frames else None
    site = (kind, last.filename if last else "?", last.lineno or 0 if last else 0)
    where = f"{site[1]}:{site[2]}"
    rid = request_id[:64].encode("unicode_escape").decode("ascii")  # a client may choose it: no raw bytes
    if site in _seen:
        log.error("check %s failed unexpectedly: %s at %s (call stack logged before)", rid, kind, where)
        return
    if len(_seen) >= _MAX_SITES:
        _seen.clear()
    _seen.add(site)
    stack = "".join(traceback.format_list(frames)).rstrip()
    log.error("check %s failed unexpectedly: %s at %s\nTraceback (message withheld):\n%s", rid, kind, where, stack)
