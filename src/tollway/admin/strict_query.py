"""Unknown query parameters are refused (422), not ignored: ``?limt=10`` is a typo the caller should
hear about, and the OpenAPI document then says exactly what a request may carry."""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from tollway.admin.problems import ProblemError, ValidationIssue

_NAMES: dict[int, frozenset[str]] = {}  # by id(route): routes live as long as their app (and are unhashable)


def _query_names(route: APIRoute) -> frozenset[str]:
    known = _NAMES.get(id(route))
    if known is not None:
        return known
    names: set[str] = set()
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(param.alias for param in dependant.query_params)
        pending.extend(dependant.dependencies)
    _NAMES[id(route)] = frozenset(names)
    return _NAMES[id(route)]


async def reject_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params.keys()) - _query_names(route))
    if unknown:
        issues = [
            ValidationIssue(location=["query", name], message="unknown query parameter", type="extra_forbidden")
            for name in unknown
        ]
        shown = ", ".join(repr(name) for name in unknown[:5])
        raise ProblemError(422, "validation-error", f"Unknown query parameter(s): {shown}.", errors=issues)
