"""A local stand-in for Stripe's API, for tests and the demo: an HTTP server on a free loopback port.

It answers the endpoints ``tollway.payments.stripe_push`` uses, in Stripe's shapes (objects with
``id``, ``object``, ``metadata``…; lists and search results; errors as
``{"error": {"type", "code", "message"}}`` with Stripe's status codes), and keeps Stripe's rules that
matter to a push:

* bearer-key auth: any other key than the server's gets 401 (nothing executed, nothing stored);
* idempotency: a POST with an ``Idempotency-Key`` already used with the same parameters gets the stored
  response again (header ``Idempotent-Replayed: true``), with other parameters a 400
  ``idempotency_error``; only responses of executed requests are stored (not 401s, not injected failures);
* items are added to draft invoices only; finalizing a draft makes it ``open`` (``paid`` at 0) with a
  number (its own, or ``FAKE-0001``…), finalizing anything else is a 400.

Tests drive it: ``fail(...)`` makes matching requests fail with a 4xx, ``hold(n)`` makes the n-th
request wait (``held`` is set) until ``release()``, so a test can kill the client while Stripe is
"executing" a call; ``requests`` records every request, ``objects`` every object created.

    with FakeStripe() as fake:  # fake.url, fake.api_key
        ...
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_KEY = "sk_test_tollway_fake_0123456789"
_INTS = {"amount", "due_date", "days_until_due", "start", "end", "limit"}
_BOOLS = {"auto_advance", "discountable"}


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it, and what it answered."""

    method: str
    path: str
    params: dict[str, str]  # query (GET) or form body (POST), flat: metadata[tollway_line] → "1"
    idempotency_key: str | None
    status: int
    replayed: bool
    error_type: str | None = None  # the error's type when it failed: idempotency_error, invalid_request_error…


@dataclass
class Failure:
    """Requests to fail: ``method`` and ``path`` equal, each of ``params`` present with that value."""

    method: str
    path: str
    params: Mapping[str, str]
    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = "parameter_invalid"
    message: str = "injected failure"

    def matches(self, method: str, path: str, params: Mapping[str, str]) -> bool:
        return method == self.method and path == self.path and all(params.get(k) == v for k, v in self.params.items())


class StripeError(Exception):
    def __init__(self, status: int, type_: str, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.code = status, type_, code

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": str(self)}
        if self.code is not None:
            error["code"] = self.code
        return {"error": error}


@dataclass
class _Stored:
    signature: tuple[str, str, tuple[tuple[str, str], ...]]
    status: int
    body: dict[str, Any]


@dataclass
class FakeStripe:
    api_key: str = API_KEY
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → object, in creation order
    failures: list[Failure] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    # Stripe's search is eventually consistent ("data is searchable in less than a minute"): a customer
    # is found by search only this long after its creation (lists and retrievals see it at once).
    search_delay_s: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._numbers = itertools.count(1)
        self._idempotent: dict[str, _Stored] = {}
        self._born: dict[str, float] = {}
        self._hold_at: int | None = None
        self._released = threading.Event()
        self._arrived = 0
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> FakeStripe:
        handler = _handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-stripe", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- test controls -------------------------------------------------------------------------------

    def fail(self, failure: Failure) -> None:
        self.failures.append(failure)

    def hold(self, n: int) -> None:
        """Make the n-th request from now on (1-based) wait until ``release()``; ``held`` is set when it
        arrives. It is executed after the release (the client may be gone: Stripe did the work, the
        answer is lost)."""
        with self._lock:
            self._hold_at = self._arrived + n
        self.held.clear()
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The objects of one kind (``customer``, ``invoice``, ``invoiceitem``), in creation order."""
        with self._lock:
            return [dict(o) for o in self.objects.values() if o["object"] == kind]

    def executed(self) -> list[Recorded]:
        """The POSTs that created or changed something (not replays, not errors)."""
        return [r for r in self.requests if r.method == "POST" and not r.replayed and r.status == 200]

    # --- request handling -------------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], bool]:
        parts = urlsplit(target)
        raw = body.decode() if method == "POST" else parts.query
        pairs = parse_qsl(raw, keep_blank_values=True)
        params = dict(pairs)
        key = headers.get("idempotency-key")
        with self._lock:
            self._arrived += 1
            hold = self._hold_at is not None and self._arrived == self._hold_at
        if hold:
            self.held.set()
            self._released.wait(timeout=60)
        with self._lock:
            status, answer, replayed = self._answer(method, parts.path, pairs, params, headers, key)
            error = answer.get("error", {}).get("type") if status >= 400 else None
            self.requests.append(Recorded(method, parts.path, params, key, status, replayed, error))
        return status, answer, replayed

    def _answer(
        self,
        method: str,
        path: str,
        pairs: list[tuple[str, str]],
        params: dict[str, str],
        headers: Mapping[str, str],
        key: str | None,
    ) -> tuple[int, dict[str, Any], bool]:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            given = headers.get("authorization", "").removeprefix("Bearer ")
            shown = given[:8] + "*" * max(0, len(given) - 12) + given[-4:] if given else ""
            error = StripeError(401, "invalid_request_error", f"Invalid API Key provided: {shown}", "api_key_invalid")
            return 401, error.body(), False
        for failure in self.failures:
            if failure.matches(method, path, params):
                error = StripeError(failure.status, failure.type, failure.message, failure.code)
                return failure.status, error.body(), False
        signature = (method, path, tuple(sorted(pairs)))
        if method == "POST" and key is not None and key in self._idempotent:
            stored = self._idempotent[key]
            if stored.signature != signature:
                error = StripeError(
                    400,
                    "idempotency_error",
                    f"Keys for idempotent requests can only be used with the same parameters they were first used "
                    f"with. Try using a key other than '{key}' if you meant to execute a different request.",
                )
                return 400, error.body(), False
            return stored.status, stored.body, True
        try:
            status, answer = 200, self._route(method, path, _nest(params))
        except StripeError as exc:
            status, answer = exc.status, exc.body()
        if method == "POST" and key is not None:
            self._idempotent[key] = _Stored(signature, status, answer)
        return status, answer, False

    def _route(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        segments = path.strip("/").split("/")
        if segments[0] != "v1" or len(segments) < 2:
            raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")
        resource, rest = segments[1], segments[2:]
        if resource == "customers" and method == "POST" and not rest:
            return self._create("cus", "customer", {"email": None, "name": None, "address": None}, params)
        if resource == "customers" and method == "GET" and rest == ["search"]:
            return self._search_customers(str(params.get("query", "")))
        if resource == "invoices" and method == "POST" and not rest:
            customer = self._get(str(params.get("customer", "")), "customer")
            defaults = {"status": "draft", "number": None, "total": 0, "amount_due": 0, "auto_advance": False}
            return self._create("in", "invoice", {**defaults, "customer": customer["id"]}, params)
        if resource == "invoices" and method == "GET" and not rest:
            return self._list("invoice", "/v1/invoices", lambda o: o["customer"] == params.get("customer"))
        if resource == "invoices" and method == "GET" and len(rest) == 1:
            return dict(self._get(rest[0], "invoice"))
        if resource == "invoices" and method == "POST" and len(rest) == 2 and rest[1] == "finalize":
            return self._finalize(rest[0], params)
        if resource == "invoiceitems" and method == "POST" and not rest:
            return self._create_item(params)
        if resource == "invoiceitems" and method == "GET" and not rest:
            return self._list("invoiceitem", "/v1/invoiceitems", lambda o: o["invoice"] == params.get("invoice"))
        raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _create(self, prefix: str, kind: str, defaults: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        created = {
            **defaults,
            **params,
            "id": f"{prefix}_fake{next(self._ids):06d}",
            "object": kind,
            "created": int(time.time()),
            "livemode": False,
            "metadata": params.get("metadata", {}),
        }
        self.objects[created["id"]] = created
        self._born[created["id"]] = time.monotonic()
        return dict(created)

    def _get(self, object_id: str, kind: str) -> dict[str, Any]:
        found = self.objects.get(object_id)
        if found is None or found["object"] != kind:
            raise StripeError(404, "invalid_request_error", f"No such {kind}: '{object_id}'", "resource_missing")
        return found

    def _create_item(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = self._get(str(params.get("customer", "")), "customer")
        invoice = self._get(str(params.get("invoice", "")), "invoice")
        if invoice["status"] != "draft":
            raise StripeError(
                400, "invalid_request_error", f"Invoice {invoice['id']} is not a draft", "invoice_not_editable"
            )
        if "amount" not in params:
            raise StripeError(400, "invalid_request_error", "Missing required param: amount.", "parameter_missing")
        item = self._create("ii", "invoiceitem", {"customer": customer["id"], "invoice": invoice["id"]}, params)
        invoice["total"] += item["amount"]
        invoice["amount_due"] = max(0, invoice["total"])
        return item

    def _finalize(self, invoice_id: str, params: dict[str, Any]) -> dict[str, Any]:
        invoice = self._get(invoice_id, "invoice")
        if invoice["status"] != "draft":
            raise StripeError(
                400,
                "invalid_request_error",
                "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                "invoice_unexpected_state",
            )
        invoice["status"] = "open" if invoice["total"] > 0 else "paid"
        invoice["number"] = invoice["number"] or f"FAKE-{next(self._numbers):04d}"
        invoice["auto_advance"] = params.get("auto_advance", invoice["auto_advance"])
        return dict(invoice)

    def _list(self, kind: str, url: str, keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        found = [dict(o) for o in self.objects.values() if o["object"] == kind and keep(o)]
        found.reverse()  # newest first, as Stripe lists
        return {"object": "list", "data": found, "has_more": False, "url": url}

    def _search_customers(self, query: str) -> dict[str, Any]:
        prefix = "metadata['tollway_customer_id']:'"
        if not (query.startswith(prefix) and query.endswith("'")):
            raise StripeError(400, "invalid_request_error", f"this fake searches by tollway_customer_id only: {query}")
        wanted = query[len(prefix) : -1].replace("\\'", "'").replace("\\\\", "\\")
        found = [
            dict(o)
            for o in self.objects.values()
            if o["object"] == "customer"
            and o["metadata"].get("tollway_customer_id") == wanted
            and time.monotonic() - self._born[o["id"]] >= self.search_delay_s
        ]
        url = "/v1/customers/search"
        return {"object": "search_result", "data": found, "has_more": False, "next_page": None, "url": url}


def _nest(flat: Mapping[str, str]) -> dict[str, Any]:
    """Stripe's form encoding (``metadata[a]=1``, ``period[start]=2``) back into nested values."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        path = name.replace("]", "").split("[")
        target = nested
        for part in path[:-1]:
            target = target.setdefault(part, {})
        leaf = path[-1]
        converted: Any = value
        if leaf in _INTS and value.lstrip("-").isdigit():
            converted = int(value)
        elif leaf in _BOOLS:
            converted = value == "true"
        target[leaf] = converted
    return nested


def _handler(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer, replayed = fake.handle(method, self.path, headers, body)
            payload = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Request-Id", f"req_fake{len(fake.requests):06d}")
                if replayed:
                    self.send_header("Idempotent-Replayed", "true")
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client is gone (killed while its request was held)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
