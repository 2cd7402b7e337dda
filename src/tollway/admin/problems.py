"""RFC 9457 problem documents: every error the management API answers, validation errors included.

Handlers raise :class:`ProblemError`; the app maps it, FastAPI's validation errors and Starlette's
``HTTPException`` (unknown route: 404, wrong method: 405) to ``application/problem+json`` with
``type``, ``title``, ``status``, ``detail`` and ``instance`` (the request id). ``problem_responses``
documents them in the OpenAPI document, all pointing at the one ``Problem`` schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_SCHEMA_REF: Final = "#/components/schemas/Problem"

TITLES: Final[Mapping[int, str]] = {
    400: "Bad request",
    401: "Admin credential required",
    403: "Insufficient scope",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Invalid request",
    500: "Internal error",
    503: "Service unavailable",
}


class ValidationIssue(BaseModel):
    """One invalid part of a request: where (``["body", "plan_id"]``), what is wrong, and its kind."""

    location: list[str] = Field(description='path to the invalid part, e.g. ["body", "plan_id"]')
    message: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(description="a URI naming the kind of problem")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str = Field(description="the request id (also in the x-request-id response header)")
    errors: list[ValidationIssue] | None = Field(default=None, description="validation problems, one per field")


class ProblemError(Exception):
    """Raise to answer with a problem: ``slug`` completes the type URI (``not-found``, ``conflict``…)."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[ValidationIssue] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or TITLES.get(status, "Error")
        self.headers = dict(headers or {})
        self.errors = list(errors) if errors is not None else None


def not_found(what: str) -> ProblemError:
    return ProblemError(404, "not-found", f"{what} does not exist.")


def conflict(detail: str) -> ProblemError:
    return ProblemError(409, "conflict", detail)


def invalid(detail: str, location: Sequence[str] = ("body",)) -> ProblemError:
    """A 422 for a request that is well formed but breaks a domain rule (``ValueError`` messages)."""
    issue = ValidationIssue(location=list(location), message=detail, type="value_error")
    return ProblemError(422, "validation-error", detail, errors=[issue])


def problem_response(error: ProblemError, type_base: str, request_id: str) -> JSONResponse:
    body = Problem(
        type=type_base + error.slug,
        title=error.title,
        status=error.status,
        detail=error.detail,
        instance=request_id,
        errors=error.errors,
    )
    headers = {**error.headers, "x-request-id": request_id}
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=error.status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these statuses, each a ``Problem``."""
    return {
        status: {
            "description": TITLES[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}},
        }
        for status in statuses
    }
