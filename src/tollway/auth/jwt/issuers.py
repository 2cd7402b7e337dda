"""The issuers file (``TOLLWAY_JWT_ISSUERS``): YAML, or a ConfigMap holding it, → trusted :class:`Issuer`\\ s.

Like the plan catalog, every problem is reported at once as ``file:line:column``, and every model is
strict with no unknown keys. Shared secrets are read from an environment variable or a file named in the
file (never written in it), and no message ever contains a secret::

    apiVersion: tollway.dev/v1
    kind: TokenIssuers
    issuers:
      corp-idp:                                   # a name: logs and the key-id slot, jwt:corp-idp:<sub>
        issuer: https://idp.example.com/          # the exact `iss`
        audiences: [https://api.example.com]
        algorithms: [RS256, ES256]
        jwks: {url: https://idp.example.com/.well-known/jwks.json}
        customer_claim: client_id                 # sub (default), client_id, azp or any claim
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from tollway.auth.jwt.errors import IssuerConfigError
from tollway.auth.jwt.issuer import DEFAULT_SCOPE_CLAIMS, Issuer, JwksPolicy
from tollway.auth.jwt.keys import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    MIN_HMAC_SECRET_BYTES,
    SUPPORTED_ALGORITHMS,
    KeySet,
    UnusableKey,
    VerificationKey,
    key_family,
    public_key_from_jwk,
    public_key_from_pem,
)
from tollway.plans.errors import CatalogError, CatalogIssue, Problem, format_path, render_value
from tollway.plans.fields import Identifier, StrictModel
from tollway.plans.loader import read_yaml_file
from tollway.plans.yaml_source import YamlDocument, read_document

_LOOPBACK_NAMES: Final = frozenset({"localhost"})
_PREFIX_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-")
Seconds = Annotated[float, Field(gt=0, le=86400)]


class JwksSpec(StrictModel):
    url: str
    min_ttl_s: Seconds = 60.0
    max_ttl_s: Seconds = 3600.0
    default_ttl_s: Seconds = 300.0
    refetch_interval_s: Annotated[float, Field(ge=0.1, le=3600)] = 5.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise PydanticCustomError("jwks_url", "expected an https:// URL")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise PydanticCustomError("jwks_url", "keys must be fetched over https (plain http only on loopback)")
        return value

    @model_validator(mode="after")
    def _ttls(self) -> JwksSpec:
        if self.min_ttl_s > self.max_ttl_s:
            raise PydanticCustomError("jwks_ttl", "min_ttl_s must not exceed max_ttl_s")
        return self


class StaticKeySpec(StrictModel):
    """One public key: ``pem`` (inline), ``pem_file`` or ``jwk``; ``kid`` names it (a JWK's own wins)."""

    kid: str | None = Field(default=None, min_length=1)
    pem: str | None = None
    pem_file: str | None = None
    jwk: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StaticKeySpec:
        if sum(x is not None for x in (self.pem, self.pem_file, self.jwk)) != 1:
            raise PydanticCustomError("key_source", "a key needs exactly one of `pem`, `pem_file` or `jwk`")
        return self


class IssuerSpec(StrictModel):
    issuer: str = Field(min_length=1)
    audiences: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    algorithms: list[str] = Field(min_length=1)
    jwks: JwksSpec | None = None
    keys: list[StaticKeySpec] | None = Field(default=None, min_length=1)
    hmac_secret_env: str | None = Field(default=None, min_length=1)
    hmac_secret_file: str | None = Field(default=None, min_length=1)
    leeway_s: Annotated[int, Field(ge=0, le=300)] = 30
    customer_claim: str = Field(default="sub", min_length=1)
    customer_prefix: str = ""
    scope_claims: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: list(DEFAULT_SCOPE_CLAIMS), min_length=1
    )

    @field_validator("customer_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and (not set(value) <= _PREFIX_CHARS or not value[0].isalnum()):
            raise PydanticCustomError(
                "customer_prefix", "use letters, digits and . _ : @ -, starting with a letter or digit"
            )
        return value


class IssuersFile(StrictModel):
    api_version: Literal["tollway.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["TokenIssuers"]
    issuers: dict[Identifier, IssuerSpec] = Field(min_length=1)


def load_issuers(path: Path, environ: Mapping[str, str] | None = None) -> tuple[Issuer, ...]:
    """Read and check ``path``. Raises :class:`IssuerConfigError` (every issue, or why it is unreadable)."""
    try:
        text = read_yaml_file(path)
    except CatalogError as exc:  # larger than the limit, or not UTF-8
        raise IssuerConfigError(exc.issues) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise IssuerConfigError([CatalogIssue(str(path), 0, 0, f"cannot read the issuers file: {reason}")]) from None
    return load_issuers_text(text, str(path), environ, base_dir=path.parent)


def load_issuers_text(
    text: str, filename: str, environ: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> tuple[Issuer, ...]:
    """Check issuers ``text``; relative ``pem_file``/``hmac_secret_file`` paths are relative to
    ``base_dir``. Raises :class:`IssuerConfigError`."""
    try:
        document = read_document(text, filename)
    except CatalogError as exc:  # a YAML syntax error: nothing else can be checked
        raise IssuerConfigError(exc.issues) from None
    issues = list(document.issues)
    if document.data is None or document.reported(()):  # empty, or a limit crossed: nothing else is checked
        if not issues:
            issues.append(CatalogIssue(filename, 1, 1, "the issuers file is empty"))
        raise IssuerConfigError(issues)
    try:
        IssuersFile.model_validate(document.data)
    except ValidationError as exc:
        problems = [_translate(error, document.data) for error in exc.errors()]
        issues += [document.issue(p) for p in problems if not document.reported(p.path)]
    # The checks across fields (and reading keys and secrets) run on every issuer that is structurally
    # valid, so one pass reports every problem of the file.
    resolver = _Resolver(document, environ if environ is not None else os.environ, base_dir or Path.cwd())
    issuers = [resolver.issuer(name, spec) for name, spec in _valid_issuers(document.data, resolver)]
    issues += resolver.issues
    if issues:
        raise IssuerConfigError(issues)
    return tuple(i for i in issuers if i is not None)


def _valid_issuers(data: object, resolver: _Resolver) -> list[tuple[str, IssuerSpec]]:
    """The structurally valid issuers; of the others, only the algorithm list is checked (their
    structural problems come from the file's validation)."""
    raw = data.get("issuers") if isinstance(data, dict) else None
    found: list[tuple[str, IssuerSpec]] = []
    for name, value in raw.items() if isinstance(raw, dict) else ():
        try:
            found.append((str(name), IssuerSpec.model_validate(value)))
        except ValidationError:
            algorithms = value.get("algorithms") if isinstance(value, dict) else None
            if isinstance(algorithms, list) and all(isinstance(a, str) for a in algorithms):
                resolver.algorithms(("issuers", str(name)), algorithms)
    return found


class _Resolver:
    """The checks that span fields, plus reading keys and secrets; collects every problem."""

    def __init__(self, document: YamlDocument, environ: Mapping[str, str], base_dir: Path) -> None:
        self._document = document
        self._environ = environ
        self._base = base_dir
        self._seen_iss: dict[str, str] = {}
        self.issues: list[CatalogIssue] = []

    def _problem(
        self, path: tuple[str | int, ...], message: str, value: object = None, *, on_key: bool = False
    ) -> None:
        shown = render_value(value) if value is not None else None
        self.issues.append(self._document.issue(Problem(path, f"{format_path(path)}: {message}", shown, on_key)))

    def issuer(self, name: str, spec: IssuerSpec) -> Issuer | None:
        at = ("issuers", name)
        before = len(self.issues)
        if spec.issuer in self._seen_iss:
            self._problem((*at, "issuer"), f"issuer {self._seen_iss[spec.issuer]} already has this iss", spec.issuer)
        self._seen_iss.setdefault(spec.issuer, name)
        algorithms = self.algorithms(at, spec.algorithms)
        if len(self.issues) > before:  # an unknown or forbidden algorithm: the checks below would only add noise
            self._secret(at, spec)
            if spec.keys is not None:
                self._static_keys(at, spec, None)
            return None
        secret = self._secret(at, spec)
        hmac = algorithms & HMAC_ALGORITHMS
        asymmetric = algorithms & ASYMMETRIC_ALGORITHMS
        has_secret_source = spec.hmac_secret_env is not None or spec.hmac_secret_file is not None
        if hmac and not has_secret_source:
            self._problem(
                (*at, "algorithms"),
                f"{', '.join(sorted(hmac))} needs a shared secret: set hmac_secret_env or hmac_secret_file "
                "(an HMAC algorithm is never verified with a public key)",
                spec.algorithms,
            )
        if has_secret_source and not hmac:
            self._problem(at, "a shared secret is configured but no HS256/HS384/HS512 algorithm is listed")
        if spec.jwks is not None and spec.keys is not None:
            self._problem((*at, "keys"), "set `jwks` or `keys`, not both", on_key=True)
        if asymmetric and spec.jwks is None and spec.keys is None:
            self._problem(
                (*at, "algorithms"), f"{', '.join(sorted(asymmetric))} needs public keys: set `jwks` or `keys`"
            )
        if not asymmetric and (spec.jwks is not None or spec.keys is not None):
            self._problem((*at, "algorithms"), "public keys are configured but no asymmetric algorithm is listed")
        static = self._static_keys(at, spec, asymmetric) if spec.keys is not None else None
        if len(self.issues) > before:
            return None
        jwks = spec.jwks
        return Issuer(
            name=name,
            issuer=spec.issuer,
            audiences=frozenset(spec.audiences),
            algorithms=frozenset(algorithms),
            leeway_s=spec.leeway_s,
            customer_claim=spec.customer_claim,
            customer_prefix=spec.customer_prefix,
            scope_claims=tuple(spec.scope_claims),
            static_keys=static,
            jwks=JwksPolicy(
                jwks.url, jwks.min_ttl_s, jwks.max_ttl_s, jwks.default_ttl_s, jwks.refetch_interval_s, jwks.timeout_s
            )
            if jwks is not None
            else None,
            hmac_secret=secret,
        )

    def algorithms(self, at: tuple[str, ...], listed: list[str]) -> frozenset[str]:
        found: set[str] = set()
        for index, algorithm in enumerate(listed):
            where: tuple[str | int, ...] = (*at, "algorithms", index)
            if algorithm.lower() == "none":
                self._problem(where, "alg none (unsigned tokens) is never accepted", algorithm)
            elif algorithm not in SUPPORTED_ALGORITHMS:
                close = difflib.get_close_matches(algorithm, sorted(SUPPORTED_ALGORITHMS), n=1)
                hint = (
                    f"; did you mean {close[0]}?"
                    if close
                    else f" (supported: {', '.join(sorted(SUPPORTED_ALGORITHMS))})"
                )
                self._problem(where, f"unsupported algorithm{hint}", algorithm)
            elif algorithm in found:
                self._problem(where, "listed twice", algorithm)
            else:
                found.add(algorithm)
        return frozenset(found)

    def _secret(self, at: tuple[str, ...], spec: IssuerSpec) -> bytes | None:
        if spec.hmac_secret_env is not None and spec.hmac_secret_file is not None:
            self._problem((*at, "hmac_secret_file"), "set hmac_secret_env or hmac_secret_file, not both", on_key=True)
            return None
        raw: bytes | None = None
        where: tuple[str | int, ...]
        if spec.hmac_secret_env is not None:
            where = (*at, "hmac_secret_env")
            value = self._environ.get(spec.hmac_secret_env)
            if not value:
                self._problem(where, "this environment variable is not set", spec.hmac_secret_env)
                return None
            raw = value.encode()
        elif spec.hmac_secret_file is not None:
            where = (*at, "hmac_secret_file")
            try:
                raw = self._path(spec.hmac_secret_file).read_bytes().strip()
            except OSError as exc:
                self._problem(where, f"cannot read the secret file: {exc.strerror}", spec.hmac_secret_file)
                return None
        else:
            return None
        if len(raw) < MIN_HMAC_SECRET_BYTES:
            self._problem(where, f"the shared secret must be at least {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 §3.2)")
            return None
        return raw

    def _static_keys(self, at: tuple[str, ...], spec: IssuerSpec, asymmetric: frozenset[str] | None) -> KeySet:
        """The issuer's static keys; each must fit one of ``asymmetric`` (None: not checked)."""
        keys: list[VerificationKey] = []
        for index, key_spec in enumerate(spec.keys or ()):
            where: tuple[str | int, ...] = (*at, "keys", index)
            try:
                if key_spec.jwk is not None:
                    loaded = public_key_from_jwk(key_spec.jwk)
                    key = VerificationKey(loaded.key, loaded.kid or key_spec.kid, loaded.algorithm)
                    where = (*where, "jwk")
                else:
                    if key_spec.pem is not None:
                        pem: str | bytes = key_spec.pem
                    else:
                        assert key_spec.pem_file is not None
                        where = (*where, "pem_file")
                        try:
                            pem = self._path(key_spec.pem_file).read_bytes()
                        except OSError as exc:
                            self._problem(where, f"cannot read the key file: {exc.strerror}", key_spec.pem_file)
                            continue
                    key = VerificationKey(public_key_from_pem(pem), key_spec.kid)
            except UnusableKey as exc:
                self._problem(where, f"unusable key: {exc}")
                continue
            if asymmetric is not None and not any(key.verifies(algorithm) for algorithm in asymmetric):
                self._problem(where, f"a {key_family(key.key)} key, but no listed algorithm uses one")
                continue
            keys.append(key)
        return KeySet.of(keys)

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self._base / path


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _translate(error: ErrorDetails, data: object) -> Problem:
    """A pydantic error → a Problem at the deepest place of ``loc`` present in the data."""
    path: list[str | int] = []
    node: object = data
    loc = error["loc"]
    for part in loc:
        if part == "[key]":
            where = tuple(path)
            message = f"{format_path(where)}: name {str(error['msg']).removeprefix('Value error, ')}"
            return Problem(where, message, render_value(path[-1]) if path else None, on_key=True)
        present = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if present:
            node = node[part]  # type: ignore[index]
            path.append(part)
    where = tuple(path)
    kind = error["type"]
    if kind == "extra_forbidden":
        return Problem(where, f"{format_path(where)}: {_unknown_field(loc)}", render_value(loc[-1]), on_key=True)
    if kind == "missing":
        return Problem(where, f"{format_path(where)}: missing required field '{loc[-1]}'", None)
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    messages = {
        "literal_error": f"expected {ctx.get('expected', 'one of the allowed values')}",
        "too_short": "must not be empty",
        "string_type": "expected a string",
        "list_type": "expected a list",
        "dict_type": "expected a mapping",
        "model_type": "expected a mapping",
        "int_type": "expected an integer",
        "float_type": "expected a number",
    }
    message = messages.get(kind) or str(error["msg"]).removeprefix("Value error, ")
    return Problem(where, f"{format_path(where)}: {message}", render_value(node))


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    name = str(loc[-1])
    allowed = _allowed_fields(loc[:-1])
    if not allowed:
        return f"unknown field '{name}'"
    close = difflib.get_close_matches(name, allowed, n=1)
    if close:
        return f"unknown field '{name}'; did you mean '{close[0]}'?"
    return f"unknown field '{name}' (allowed: {', '.join(allowed)})"


def _allowed_fields(loc: tuple[int | str, ...]) -> list[str] | None:
    """Field names of the model at ``loc``: the file, an issuer, its jwks or one of its keys."""
    models: dict[int, type[BaseModel]] = {0: IssuersFile, 2: IssuerSpec}
    model: type[BaseModel] | None = models.get(len(loc))
    if len(loc) == 3 and loc[2] == "jwks":
        model = JwksSpec
    elif len(loc) == 4 and loc[2] == "keys":
        model = StaticKeySpec
    if model is None:
        return None
    return [(info.alias or name) for name, info in model.model_fields.items()]
