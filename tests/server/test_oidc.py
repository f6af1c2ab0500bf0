"""OIDC tokens: the verifier against a real JWKS served on loopback, the token authorizer,
and the API Gateway authorizers attached to the routes."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from chalice import CognitoUserPoolAuthorizer, IAMAuthorizer
from chalice.test import Client
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from chalicelib.server.api import api_gateway_authorizer, build_route_table, create_app
from chalicelib.server.http import PUBLIC
from chalicelib.server.oidc import InvalidToken, TokenVerifier
from tests.conftest import make_context

ISSUER = "https://issuer.example"
AUDIENCE = "dicomweb-api"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "kid": kid, "use": "sig", "e": _b64(b"\1\0\1"), "n": _b64(n)}


def token(key: rsa.RSAPrivateKey = KEY, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "exp": int(time.time()) + 600,
        "scope": "openid dicomweb/read",
        **claims,
    }
    head = _b64(json.dumps({"alg": alg, "kid": kid}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = key.sign(f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{payload}.{_b64(signature)}"


class Jwks:
    """A JWKS document served on a loopback port; counts its fetches."""

    def __init__(self) -> None:
        self.keys = [_jwk(KEY, "k1")]
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    # shutdown() waits for the serving loop to poll its flag: 0.5 s a test at the default
    thread = threading.Thread(target=served.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_verify_valid_token(jwks: Jwks) -> None:
    claims = TokenVerifier(ISSUER, AUDIENCE, jwks.url).verify(token())
    assert claims["sub"] == "user-1"


def test_verify_cognito_access_token_client_id(jwks: Jwks) -> None:
    verifier = TokenVerifier(ISSUER, AUDIENCE, jwks.url)
    assert verifier.verify(token(aud=None, client_id=AUDIENCE))["client_id"] == AUDIENCE


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: token(iss="https://evil.example"), "issuer"),
        (lambda: token(aud="other"), "audience"),
        (lambda: token(exp=int(time.time()) - 3600), "expired"),
        (lambda: token(exp=None), "expired"),
        (lambda: token(nbf=int(time.time()) + 3600), "not valid yet"),
        (lambda: token(key=OTHER_KEY), "signature"),
        (lambda: token(alg="HS256"), "not RS256"),
        (lambda: token(kid="unknown"), "no key"),
        (lambda: "abc.def", "not a JWT"),
        (lambda: "@@@.@@@.@@@", "not"),
    ],
)
def test_verify_refuses(jwks: Jwks, make: Any, message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        TokenVerifier(ISSUER, AUDIENCE, jwks.url).verify(make())


def test_jwks_cached_and_refreshed_at_most_once_a_minute(jwks: Jwks) -> None:
    verifier = TokenVerifier(ISSUER, AUDIENCE, jwks.url)
    for _ in range(5):
        verifier.verify(token())
    assert jwks.fetches == 1
    jwks.keys.append(_jwk(OTHER_KEY, "k2"))  # the issuer rotates its keys
    with pytest.raises(InvalidToken, match="no key 'k2'"):
        verifier.verify(token(key=OTHER_KEY, kid="k2"))  # fetched a second ago: no refetch
    assert jwks.fetches == 1
    verifier._fetched_at -= 61
    assert verifier.verify(token(key=OTHER_KEY, kid="k2"))["sub"] == "user-1"
    assert jwks.fetches == 2


def test_jwks_unreachable_is_invalid_token() -> None:
    verifier = TokenVerifier(ISSUER, AUDIENCE, "http://127.0.0.1:9/jwks.json")
    with pytest.raises(InvalidToken, match="cannot read the issuer's JWKS"):
        verifier.verify(token())


def _oidc_context(tmp_path: Path, jwks: Jwks) -> Any:
    return make_context(
        "local",
        tmp_path,
        authorizer="oidc",
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=jwks.url,
    )


def test_token_authorizer_and_scopes_through_the_gateway(tmp_path: Path, jwks: Jwks) -> None:
    context = _oidc_context(tmp_path, jwks)
    client = Client(create_app(lambda: context))

    def get(scope: str, method: str = "GET") -> int:
        headers = {"Authorization": f"Bearer {token(scope=scope)}", "Accept": "*/*"}
        return client.http.request(method, "/dicom-web/studies", headers=headers).status_code

    assert get("dicomweb/read") == 204
    assert get("dicomweb/write") == 403
    assert get("dicomweb/read", "POST") == 403
    assert get("dicomweb/read dicomweb/write", "POST") == 415  # admitted: no body
    preflight = client.http.request(
        "OPTIONS",
        "/dicom-web/studies",
        headers={"Origin": "https://ohif.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 204


def test_token_authorizer_refuses_with_unauthorized(tmp_path: Path, jwks: Jwks) -> None:
    """API Gateway answers 401 when a token authorizer fails with 'Unauthorized'."""
    context = _oidc_context(tmp_path, jwks)
    app = create_app(lambda: context)
    authorizer = api_gateway_authorizer(app, context.settings)
    arn = "arn:aws:execute-api:us-east-1:1:abc/api/GET/dicom-web/studies"
    good = {"type": "TOKEN", "authorizationToken": f"Bearer {token()}", "methodArn": arn}
    assert authorizer(good, None)["principalId"] == "user-1"
    for bad in (f"Bearer {token(key=OTHER_KEY)}", token(), "Basic dXNlcjpwYXNz"):
        event = {"type": "TOKEN", "authorizationToken": bad, "methodArn": arn}
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            authorizer(event, None)


@pytest.mark.parametrize("kind", ["cognito", "iam"])
def test_every_route_but_options_has_the_gateway_authorizer(tmp_path: Path, kind: str) -> None:
    context = make_context(
        "local",
        tmp_path,
        authorizer=kind,
        cognito_user_pool_arn="arn:aws:cognito-idp:us-east-1:1:userpool/us-east-1_x",
    )
    app = create_app(lambda: context)
    table = build_route_table(context.settings)
    checked = 0
    for path, methods in app.routes.items():
        for method, entry in methods.items():
            scope = table.scopes[path].get("GET" if method == "HEAD" else method)
            if method == "OPTIONS" or scope == PUBLIC:
                assert entry.authorizer is None, (path, method)  # a preflight, the web app
                continue
            if kind == "iam":
                assert isinstance(entry.authorizer, IAMAuthorizer), (path, method)
                continue
            assert isinstance(entry.authorizer, CognitoUserPoolAuthorizer), (path, method)
            expected = [f"dicomweb/{scope}"] if scope else []
            assert entry.authorizer.scopes == expected, (path, method)
            checked += 1
    assert checked > 30 or kind == "iam"
