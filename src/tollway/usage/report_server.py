"""The caller's usage endpoint, ``GET /tollway/v1/usage``, served to Envoy as an upstream; and
``PATCH /tollway/v1/usage`` (``{"spend_cap": {"amount": "5.00"}}`` or ``{"spend_cap": null}``), where a
customer lowers or removes their own spend cap (``credits.spend_caps``); and ``GET``/``PUT``/``DELETE
/tollway/v1/usage/budgets``, the customer's own alert thresholds (``notifications.budgets``).

Envoy routes the path here after ext_authz admitted the request, so the caller is authenticated like
any call and ``x-tollway-customer-id`` is Tollway's own verdict (Envoy replaces whatever a client sent
under that name). The body is ``caller_report``'s JSON; failures are RFC 9457 problems. Keep-alive
HTTP/1.1 on httptools; one request at a time per connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httptools
from redis.exceptions import RedisError

from tollway.credits.spend_caps import MAX_BODY_BYTES, CapRefused
from tollway.entitlements.errors import EntitlementError
from tollway.listen import bind_tcp
from tollway.notifications.budgets import BUDGETS_PATH, BudgetRefused
from tollway.ratelimit import LimiterUnavailable
from tollway.warehouse.errors import WarehouseError

log = logging.getLogger(__name__)

USAGE_PATH: Final = "/tollway/v1/usage"
CUSTOMER_HEADER: Final = b"x-tollway-customer-id"
_REQUEST_ID: Final = b"x-request-id"
_CONTENT_TYPE: Final = b"content-type"
_MAX_HEAD_BYTES: Final = 32_768
_MAX_REQUEST_BYTES: Final = 16 * 1024 * 1024
"""A body is read to its end (kept up to MAX_BODY_BYTES + 1: a longer one is answered 413); past this in
all, the connection is closed."""
_IDLE_S: Final = 60.0
_STATUS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
}

Report = Callable[[str], Awaitable[dict[str, Any]]]
CapChange = Callable[[str, bytes, str, str], Awaitable[dict[str, Any]]]
"""``(customer, body, content type, request id)`` → the new ``{"spend_cap": ...}``; raises ``CapRefused``."""
Budgets = Callable[[str, str, bytes, str], Awaitable[dict[str, Any]]]
"""``(method, customer, body, content type)`` → ``{"budgets": [...]}``; raises ``BudgetRefused``."""


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.head_complete = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.head_complete = True

    def on_body(self, body: bytes) -> None:
        if len(self.body) <= MAX_BODY_BYTES:
            self.body += body[: MAX_BODY_BYTES + 1 - len(self.body)]

    def on_message_complete(self) -> None:
        self.complete = True


class UsageReportServer:
    def __init__(
        self,
        report: Report,
        problem_type_base: str,
        change_cap: CapChange | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        """``change_cap``: a customer's own spend cap (None: PATCH is not allowed); ``budgets``: their own
        alert thresholds (None: no budgets path)."""
        self._report = report
        self._change_cap = change_cap
        self._budgets = budgets
        self._problem_base = problem_type_base
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, sock=bind_tcp(host, port))
        return int(self._server.sockets[0].getsockname()[1])

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def answer(
        self, method: str, path: str, customer: str, request_id: str, body: bytes = b"", content_type: str = ""
    ) -> tuple[int, str, bytes]:
        """(status, content type, body) of one request."""
        if self._budgets is not None and path.split("?", 1)[0] == BUDGETS_PATH:
            return await self._budget_request(method, customer, body, content_type, request_id)
        if path.split("?", 1)[0] != USAGE_PATH:
            return self._problem(
                404, "not-found", "Not found", f"There is nothing at {path.split('?', 1)[0]}.", request_id
            )
        allowed = ("GET", "HEAD", "PATCH") if self._change_cap is not None else ("GET", "HEAD")
        if method not in allowed:
            detail = "Use GET (or PATCH to change your spend cap)." if "PATCH" in allowed else "Use GET."
            return self._problem(405, "method-not-allowed", "Method not allowed", detail, request_id)
        if not customer:
            detail = "The request did not come through Tollway's authorization: no caller identity."
            return self._problem(401, "unauthenticated", "Unauthenticated", detail, request_id)
        if method == "PATCH":
            return await self._patch(customer, body, content_type, request_id)
        try:
            document = await self._report(customer)
        except EntitlementError as exc:
            return self._problem(403, exc.reason, "Forbidden", exc.detail, request_id)
        except (LimiterUnavailable, WarehouseError) as exc:
            log.warning("usage report for %s unavailable: %s", customer, exc, extra={"request_id": request_id})
            detail = "Usage cannot be read right now. Retry shortly."
            return self._problem(503, "usage-unavailable", "Service unavailable", detail, request_id)
        return 200, "application/json", json.dumps(document, separators=(",", ":")).encode()

    async def _patch(self, customer: str, body: bytes, content_type: str, request_id: str) -> tuple[int, str, bytes]:
        assert self._change_cap is not None
        try:
            document = await self._change_cap(customer, body, content_type, request_id)
        except CapRefused as exc:
            return self._problem(exc.status, exc.slug, _STATUS.get(exc.status, "Bad Request"), exc.detail, request_id)
        except EntitlementError as exc:
            return self._problem(403, exc.reason, "Forbidden", exc.detail, request_id)
        except (RedisError, OSError, LimiterUnavailable) as exc:
            log.warning("spend cap of %s not changed: %s", customer, exc, extra={"request_id": request_id})
            detail = "The spend cap cannot be changed right now; nothing was changed. Retry shortly."
            return self._problem(503, "spend-cap-unavailable", "Service unavailable", detail, request_id)
        return 200, "application/json", json.dumps(document, separators=(",", ":")).encode()

    async def _budget_request(
        self, method: str, customer: str, body: bytes, content_type: str, request_id: str
    ) -> tuple[int, str, bytes]:
        assert self._budgets is not None
        if method not in ("GET", "HEAD", "PUT", "DELETE"):
            detail = "Use GET, PUT (replace your budgets) or DELETE (remove them)."
            return self._problem(405, "method-not-allowed", "Method not allowed", detail, request_id)
        if not customer:
            detail = "The request did not come through Tollway's authorization: no caller identity."
            return self._problem(401, "unauthenticated", "Unauthenticated", detail, request_id)
        try:
            document = await self._budgets("GET" if method == "HEAD" else method, customer, body, content_type)
        except BudgetRefused as exc:
            return self._problem(exc.status, exc.slug, _STATUS.get(exc.status, "Bad Request"), exc.detail, request_id)
        except EntitlementError as exc:
            return self._problem(403, exc.reason, "Forbidden", exc.detail, request_id)
        except (RedisError, OSError) as exc:
            log.warning("budgets of %s not served: %s", customer, exc, extra={"request_id": request_id})
            detail = "Your budgets cannot be read or changed right now; nothing was changed. Retry shortly."
            return self._problem(503, "budgets-unavailable", "Service unavailable", detail, request_id)
        return 200, "application/json", json.dumps(document, separators=(",", ":")).encode()

    def _problem(self, status: int, slug: str, title: str, detail: str, request_id: str) -> tuple[int, str, bytes]:
        body = {"type": f"{self._problem_base}{slug}", "title": title, "status": status, "detail": detail}
        if request_id:
            body["instance"] = request_id
        return status, "application/problem+json", json.dumps(body).encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = _Request()
                parser = httptools.HttpRequestParser(request)
                received = 0
                while not request.complete:
                    data = await asyncio.wait_for(reader.read(65536), _IDLE_S)
                    received += len(data)
                    if not data:
                        return
                    parser.feed_data(data)
                    if received > (_MAX_REQUEST_BYTES if request.head_complete else _MAX_HEAD_BYTES):
                        return
                method = parser.get_method().decode()
                status, content_type, body = await self.answer(
                    method,
                    request.url.decode("latin-1"),
                    request.headers.get(CUSTOMER_HEADER, b"").decode("latin-1"),
                    request.headers.get(_REQUEST_ID, b"").decode("latin-1"),
                    request.body,
                    request.headers.get(_CONTENT_TYPE, b"").decode("latin-1"),
                )
                reason = "Service Unavailable" if status == 503 else _STATUS.get(status, "OK")
                head = (
                    f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
                    f"content-length: {len(body)}\r\ncache-control: no-store\r\n\r\n"
                ).encode()
                writer.write(head if method == "HEAD" else head + body)
                await writer.drain()
                if not parser.should_keep_alive():
                    return
        except (httptools.HttpParserError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
