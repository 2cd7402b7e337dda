"""The management API's FastAPI application: routers, request ids, problem+json for every error, and
the OpenAPI document at ``/openapi.json``."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import lru_cache
from typing import Any, Final

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tollway import __version__
from tollway.admin.problems import Problem, ProblemError, ValidationIssue, problem_response, problem_responses
from tollway.admin.routes import (
    audit,
    credit_notes,
    credits,
    customers,
    invoices,
    keys,
    page,
    payments,
    subscriptions,
    usage,
    webhook_endpoints,
    webhook_events,
)
from tollway.admin.services import AdminServices
from tollway.admin.strict_query import reject_unknown_query
from tollway.subscriptions.errors import SubscriptionStoreUnavailable
from tollway.warehouse.errors import WarehouseError

log = logging.getLogger(__name__)
access_log = logging.getLogger("tollway.admin.access")

ServicesOpener = Callable[[], AbstractAsyncContextManager[AdminServices]]

_HTTP_METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})
_CLIENT_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SLUGS: Final = {
    400: "bad-request",
    401: "missing-credentials",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "body-too-large",
    415: "unsupported-media-type",
}

DESCRIPTION: Final = """\
Manage Tollway's customers, API keys, subscriptions (plan changes with proration, limit overrides),
prepaid credit grants and balances, webhook endpoints, and read usage and invoices. Every change is
recorded in the audit log (`GET /audit`).

Authenticate with an admin credential (`tollway admin credentials create`) as a bearer token:
scope `admin:read` reads, `admin:write` also changes. Errors are RFC 9457 problem documents
(`application/problem+json`). Lists are paginated with `limit` and the `next` link's `cursor`.
"""


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def _type_base(request: Request) -> str:
    services: AdminServices | None = getattr(request.app.state, "services", None)
    return services.problem_type_base if services is not None else "https://tollway.dev/problems/"


def _problem(request: Request, error: ProblemError) -> Response:
    return problem_response(error, _type_base(request), _request_id(request))


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return _problem(request, exc)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    issues = [
        ValidationIssue(
            location=[str(part) for part in error.get("loc", ())],
            message=str(error.get("msg", "invalid")),
            type=str(error.get("type", "value_error")),
        )
        for error in exc.errors()
    ]
    where = ", ".join(".".join(issue.location) for issue in issues[:5])
    return _problem(
        request, ProblemError(422, "validation-error", f"The request is not valid: {where}.", errors=issues)
    )


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug = _SLUGS.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else "The request could not be served."
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        detail = f"There is no resource at {request.url.path}."
    elif exc.status_code == 405:
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed on {request.url.path}; use {' or '.join(allowed)}."
    return _problem(request, ProblemError(exc.status_code, slug, detail, headers=headers))


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document gives this path (Starlette's own ``Allow`` names one route's)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if _path_pattern(template).fullmatch(request.url.path):
            methods.update(method.upper() for method in operations if method in _HTTP_METHODS)
    return sorted(methods)


@lru_cache(maxsize=256)
def _path_pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)))


async def _on_store(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable: %s", exc)
    return _problem(
        request,
        ProblemError(
            503, "store-unavailable", "Redis could not be reached; retry shortly.", headers={"Retry-After": "1"}
        ),
    )


async def _on_warehouse(request: Request, exc: Exception) -> Response:
    log.warning("ClickHouse unavailable: %s", exc)
    return _problem(
        request,
        ProblemError(
            503, "warehouse-unavailable", f"Usage and invoices cannot be read now: {exc}", headers={"Retry-After": "5"}
        ),
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return _problem(request, ProblemError(500, "internal-error", "The server failed; the request id identifies it."))


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(problem.pop("$defs", {}))
            schemas["Problem"] = problem
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            malformed = problem_responses(400)[400]  # any request: a body that is not JSON, a bad cursor
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.setdefault("responses", {}).setdefault("400", malformed)
            app.openapi_schema = schema
        return app.openapi_schema

    return build


def create_app(open_services: ServicesOpener) -> FastAPI:
    """The application; ``open_services`` is entered for its lifetime (the lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services() as services:
            app.state.services = services
            yield

    app = FastAPI(
        title="Tollway Entitlement Management API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
        docs_url=None,  # Swagger UI would load scripts from a CDN: the document itself is at /openapi.json
        redoc_url=None,
    )

    @app.middleware("http")
    async def request_ids(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = request.headers.get("x-request-id", "")
        request.state.request_id = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        response = await call_next(request)
        response.headers["x-request-id"] = request.state.request_id
        # The path only: a query string may carry a page link's token.
        access_log.info(
            "%s %s %d",
            request.method,
            request.url.path,
            response.status_code,
            extra={"request_id": request.state.request_id},
        )
        return response

    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RedisError, _on_store)
    app.add_exception_handler(ConnectionError, _on_store)
    app.add_exception_handler(SubscriptionStoreUnavailable, _on_store)
    app.add_exception_handler(WarehouseError, _on_warehouse)
    app.add_exception_handler(Exception, _on_unexpected)
    for module in (
        customers,
        keys,
        subscriptions,
        credits,
        usage,
        invoices,
        credit_notes,
        page,
        audit,
        webhook_endpoints,
        webhook_events,
        payments,
    ):
        app.include_router(module.router)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
