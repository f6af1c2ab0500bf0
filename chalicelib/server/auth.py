"""Who is calling and whether they may: authentication and the route's scope, for every route.

- Local (`make run`): Orthanc's `AuthenticationEnabled` and `RegisteredUsers`, HTTP Basic
  (RFC 7617), passwords compared in constant time. Orthanc has no scopes: a user has every
  scope unless `DicomWeb.UserScopes` lists theirs.
- AWS: the API Gateway authorizer of the stage (`DicomWeb.Authorizer`) has verified the caller
  before the Lambda runs; the app reads what it found in the event's `requestContext` and
  checks the route's scope:
  - `cognito`: the access token's `scope` claim (`dicomweb/read dicomweb/write ...`);
  - `oidc`: the scopes the token authorizer passes in its context (`scope`, same form);
  - `iam`: the caller's ARN (SigV4); `DicomWeb.UserScopes` may narrow it by ARN.

A CORS preflight is answered before any of this (it carries no credentials, Fetch standard
§3.3.5 "CORS-preflight request").
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.config import SCOPES, Settings
from chalicelib.errors import Forbidden, Unauthorized

REALM = "dicomweb"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user name (or ARN, or token subject) and its scopes."""

    name: str
    scopes: frozenset[str]


ANONYMOUS = Principal("anonymous", frozenset(SCOPES))
"""The caller while authentication is off (loopback only locally; a private API on AWS)."""


def _challenge(settings: Settings) -> dict[str, str]:
    if settings.authentication_enabled:
        return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
    if settings.authorizer == "iam":
        return {"WWW-Authenticate": "AWS4-HMAC-SHA256"}
    return {"WWW-Authenticate": f'Bearer realm="{REALM}"'}


def _scopes_of(settings: Settings, name: str) -> frozenset[str]:
    listed = settings.user_scopes.get(name)
    return frozenset(SCOPES) if listed is None else frozenset(listed)


def _basic(settings: Settings, header: str) -> Principal:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        raise Unauthorized(
            "this server needs HTTP Basic credentials (Authorization: Basic ...) of one of "
            "its RegisteredUsers",
            _challenge(settings),
        )
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user, sep, password = "", "", ""
    expected = settings.registered_users.get(user) if sep else None
    # Compare even for an unknown user, so that timing does not tell which users exist.
    matches = hmac.compare_digest(
        password.encode("utf-8"), (expected or "\0" + password).encode("utf-8")
    )
    if expected is None or not matches:
        raise Unauthorized("the user name or password is wrong", _challenge(settings))
    return Principal(user, _scopes_of(settings, user))


def _token_scopes(settings: Settings, text: Any) -> frozenset[str]:
    """Our scopes among the OAuth scopes of a token (`dicomweb/read` → `read`)."""
    words = text.split() if isinstance(text, str) else list(text or [])
    prefix = settings.scope_prefix
    return frozenset(w.removeprefix(prefix) for w in words if w.startswith(prefix)) & set(SCOPES)


def _from_authorizer(settings: Settings, request_context: Mapping[str, Any]) -> Principal:
    authorizer = request_context.get("authorizer") or {}
    if settings.authorizer == "iam":
        arn = (request_context.get("identity") or {}).get("userArn")
        if arn:
            return Principal(arn, _scopes_of(settings, arn))
    elif settings.authorizer == "cognito":
        claims = authorizer.get("claims") or {}
        if claims:
            name = claims.get("username") or claims.get("client_id") or claims.get("sub", "")
            return Principal(name, _token_scopes(settings, claims.get("scope", "")))
    elif authorizer.get("principalId"):  # oidc: our token authorizer's context
        return Principal(
            authorizer["principalId"], _token_scopes(settings, authorizer.get("scope", ""))
        )
    raise Unauthorized(
        f"no verified caller: the API Gateway {settings.authorizer} authorizer passed none",
        _challenge(settings),
    )


def authenticate(
    settings: Settings, headers: Mapping[str, str], request_context: Mapping[str, Any]
) -> Principal:
    """The caller of a request; `Unauthorized` (401 with a challenge) when there is none."""
    if settings.authentication_enabled:
        return _basic(settings, headers.get("authorization", ""))
    if settings.authorizer != "none":
        return _from_authorizer(settings, request_context)
    return ANONYMOUS


def require_scope(principal: Principal, scope: str | None, method: str, path: str) -> None:
    """`Forbidden` (403) unless `principal` has `scope` (None: any authenticated caller)."""
    if scope is not None and scope not in principal.scopes:
        held = ", ".join(sorted(principal.scopes)) or "none"
        raise Forbidden(f"{method} {path} needs the '{scope}' scope; {principal.name} has: {held}")
