"""Request-scoped pieces the handlers declare: the services, the request id, the caller's admin
credential (401 without one, 403 when its scope is too narrow) and the audit recorder of a change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tollway.admin.credentials import AdminCredential
from tollway.admin.problems import ProblemError
from tollway.admin.scopes import Scope
from tollway.admin.services import AdminServices

REALM = 'Bearer realm="tollway-admin"'

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="An admin credential (`tollway admin credentials create`): scope admin:read or admin:write.",
)


async def get_services(request: Request) -> AdminServices:
    services: AdminServices = request.app.state.services
    return services


async def get_request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


Services = Annotated[AdminServices, Depends(get_services)]
RequestId = Annotated[str, Depends(get_request_id)]
BearerToken = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def authenticate(services: AdminServices, token: HTTPAuthorizationCredentials | None) -> AdminCredential:
    if token is None:
        raise ProblemError(
            401,
            "missing-credentials",
            "Send an admin credential as 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": REALM},
        )
    credential = await services.credentials.authenticate(token.credentials)
    if credential is None:
        raise ProblemError(
            401,
            "invalid-credentials",
            "The admin credential is not known (mistyped, or revoked).",
            title="Invalid admin credential",
            headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
        )
    return credential


def _require(scope: Scope) -> Any:
    async def dependency(services: Services, token: BearerToken) -> AdminCredential:
        credential = await authenticate(services, token)
        if not credential.scope.allows(scope):
            raise ProblemError(
                403,
                "insufficient-scope",
                f"This needs scope {scope.value}; credential {credential.name!r} has {credential.scope.value}.",
                headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope", scope="{scope.value}"'},
            )
        return credential

    return dependency


Reader = Annotated[AdminCredential, Depends(_require(Scope.READ))]
Writer = Annotated[AdminCredential, Depends(_require(Scope.WRITE))]


@dataclass(frozen=True, slots=True)
class ChangeRecorder:
    """Writes the audit entry of a change made by ``actor`` in request ``request_id``."""

    services: AdminServices
    actor: str
    request_id: str

    async def __call__(
        self,
        action: str,
        resource_type: str,
        resource_id: str,
        *,
        customer_id: str | None,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> None:
        await self.services.audit.record(
            at=self.services.clock.now(),
            actor=self.actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            customer_id=customer_id,
            request_id=self.request_id,
            before=before,
            after=after,
        )


async def get_recorder(services: Services, writer: Writer, request_id: RequestId) -> ChangeRecorder:
    return ChangeRecorder(services, writer.name, request_id)


Recorder = Annotated[ChangeRecorder, Depends(get_recorder)]
