"""OIDC bearer tokens, verified by API Gateway's token authorizer (`DicomWeb.Authorizer: oidc`).

A token is a JWT (RFC 7519) signed with RS256 (RFC 7518 §3.3) by a key of the issuer's JWK Set
(RFC 7517), read from `DicomWeb.OidcJwksUrl` or else from the issuer's discovery document
(OpenID Connect Discovery 1.0 §4, `jwks_uri`). The keys are cached for the life of the
container; a token signed with an unknown `kid` refreshes them, at most once a minute. Checked:
signature, `iss`, `aud` (or Cognito's `client_id`), `exp` and `nbf` with a minute of leeway.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

LEEWAY = 60
REFRESH_INTERVAL = 60
FETCH_TIMEOUT = 5


class InvalidToken(Exception):
    """The token cannot be trusted; the message says why (never the token itself)."""


def _b64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("a token part is not base64url") from None


def _json_part(text: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64(text))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidToken("a token part is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken("a token part is not a JSON object")
    return value


@dataclass
class TokenVerifier:
    issuer: str
    audience: str
    jwks_url: str = ""
    _keys: dict[str, Any] = field(default_factory=dict)
    _fetched_at: float = -float("inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _public_keys(self, refresh: bool) -> dict[str, Any]:
        """The issuer's RSA signing keys by `kid`; fetched first, and again on `refresh` when
        the last fetch is a minute old."""
        with self._lock:
            due = not self._keys or refresh
            if due and time.monotonic() - self._fetched_at >= REFRESH_INTERVAL:
                self._fetched_at = time.monotonic()
                try:
                    self._keys = self._fetch_keys()
                except (requests.RequestException, ValueError, KeyError) as exc:
                    raise InvalidToken(f"cannot read the issuer's JWKS: {exc}") from None
            return self._keys

    def _fetch_keys(self) -> dict[str, Any]:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

        url = self.jwks_url or self._discover()
        document = requests.get(url, timeout=FETCH_TIMEOUT).json()
        keys = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "RSA" and jwk.get("use", "sig") == "sig":
                e, n = (int.from_bytes(_b64(jwk[name]), "big") for name in ("e", "n"))
                keys[str(jwk.get("kid", ""))] = RSAPublicNumbers(e, n).public_key()
        return keys

    def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        return requests.get(url, timeout=FETCH_TIMEOUT).json()["jwks_uri"]

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raise InvalidToken."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("not a JWT (three dot-separated parts)")
        header, claims = _json_part(parts[0]), _json_part(parts[1])
        if header.get("alg") != "RS256":
            raise InvalidToken(f"signature algorithm {header.get('alg')!r} is not RS256")
        kid = str(header.get("kid", ""))
        key = self._public_keys(refresh=False).get(kid) or self._public_keys(refresh=True).get(kid)
        if key is None:
            raise InvalidToken(f"no key {kid!r} in the issuer's JWKS")
        try:
            key.verify(
                _b64(parts[2]),
                f"{parts[0]}.{parts[1]}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, UnicodeEncodeError):
            raise InvalidToken("the signature does not verify") from None
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        if claims.get("iss") != self.issuer:
            raise InvalidToken(f"issuer {claims.get('iss')!r} is not {self.issuer!r}")
        audiences = claims.get("aud")
        if not isinstance(audiences, list):
            audiences = [audiences]
        if self.audience not in audiences and claims.get("client_id") != self.audience:
            raise InvalidToken(f"the token is not for audience {self.audience!r}")
        now = time.time()
        expires, not_before = claims.get("exp"), claims.get("nbf", 0)
        if not isinstance(expires, int | float) or expires + LEEWAY < now:
            raise InvalidToken("the token has expired (or has no exp)")
        if isinstance(not_before, int | float) and not_before - LEEWAY > now:
            raise InvalidToken("the token is not valid yet (nbf)")
