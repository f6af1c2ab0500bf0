"""Sign-in in the web app (signin.js) against a tiny OpenID provider on loopback: the
authorization code flow with PKCE (RFC 7636), then `Authorization: Bearer` on the app's calls.

The provider serves its discovery document, an authorization endpoint that redirects back with a
code at once, and a token endpoint that gives the token only for that code with the verifier
whose S256 digest the authorization request carried. Our local server needs no credentials
here: it only fills the page's sign-in settings; the test reads the headers the browser sends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Request, expect

from tests.server.test_localserver import local_server
from tests.web.test_app import FRENCH, corpus_file, store

CLIENT_ID = "viewer-client"
CODE = "the-code"
TOKEN = "token-for-the-viewer"


class Provider(ThreadingHTTPServer):
    """The provider's record: each authorization request, and each code it exchanged;
    `refuse` makes its token endpoint refuse every code."""

    authorizations: list[dict[str, str]]
    exchanges: list[dict[str, str]]
    refuse: bool = False


class ProviderHandler(BaseHTTPRequestHandler):
    server: Provider

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the assertions say what went wrong."""

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Access-Control-Allow-Origin", "*")  # the page is on another port
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        issuer = f"http://127.0.0.1:{self.server.server_port}"
        if url.path == "/.well-known/openid-configuration":
            self._answer(
                200,
                {
                    "issuer": issuer,
                    "authorization_endpoint": f"{issuer}/authorize",
                    "token_endpoint": f"{issuer}/token",
                },
            )
        elif url.path == "/authorize":
            query = dict(urllib.parse.parse_qsl(url.query))
            self.server.authorizations.append(query)
            back = {"code": CODE, "state": query.get("state", "")}
            self.send_response(302)
            self.send_header("Location", f"{query['redirect_uri']}?{urllib.parse.urlencode(back)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(404, {"error": "not_found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        asked = self.server.authorizations[-1] if self.server.authorizations else {}
        verifier = form.get("code_verifier", "").encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        valid = (
            form.get("grant_type") == "authorization_code"
            and form.get("code") == CODE
            and form.get("client_id") == CLIENT_ID
            and form.get("redirect_uri") == asked.get("redirect_uri")
            and asked.get("code_challenge_method") == "S256"
            and digest.decode() == asked.get("code_challenge")
        )
        if not valid or self.server.refuse:
            self._answer(400, {"error": "invalid_grant", "error_description": "code refused"})
            return
        self.server.exchanges.append(form)
        self._answer(200, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600})


@pytest.fixture
def provider() -> Iterator[Provider]:
    server = Provider(("127.0.0.1", 0), ProviderHandler)
    server.authorizations, server.exchanges = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sign_in_config(provider: Provider) -> dict[str, Any]:
    authority = f"http://127.0.0.1:{provider.server_port}"
    return {"DicomWeb": {"WebAppOidcAuthority": authority, "WebAppOidcClientId": CLIENT_ID}}


def test_app_signs_in_and_sends_the_token(
    browser: Browser, provider: Provider, tmp_path: Path, artifacts: Path
) -> None:
    with local_server(tmp_path / "server", config=sign_in_config(provider)) as server:
        store(server, corpus_file(FRENCH))
        context = browser.new_context()
        try:
            page = context.new_page()
            calls: list[Request] = []
            page.on(
                "request",
                lambda r: (
                    calls.append(r)
                    if r.url.startswith(server) and "/app/client/" not in r.url
                    else None
                ),
            )
            page.goto(f"{server}/dicom-web/app/client/index.html")
            sign_in = page.get_by_role("button", name="Sign in")
            expect(sign_in).to_be_visible()
            expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
            assert calls, "the app called no route before sign-in"
            assert all(r.header_value("authorization") is None for r in calls)

            calls.clear()
            sign_in.click()
            expect(page.get_by_role("button", name="Sign out")).to_be_visible()
            expect(sign_in).to_be_hidden()
            assert page.url == f"{server}/dicom-web/app/client/index.html"  # no code left
            [asked] = provider.authorizations
            assert asked["client_id"] == CLIENT_ID
            assert asked["scope"] == "openid dicomweb/read dicomweb/write dicomweb/admin"
            assert asked["redirect_uri"] == f"{server}/dicom-web/app/client/index.html"
            assert len(provider.exchanges) == 1

            page.get_by_role("tab", name="Local").click()
            thumbnail = page.locator("#local-results img.thumb")
            expect(thumbnail).to_have_count(1)
            expect(thumbnail).to_have_attribute("src", re.compile(r"^blob:"))
            page.screenshot(path=artifacts / "signed-in.png", full_page=True)
            paths = {urllib.parse.urlsplit(r.url).path.rsplit("/", 1)[-1] for r in calls}
            assert {"servers", "studies", "thumbnail"} <= paths, paths
            for call in calls:
                assert call.header_value("authorization") == f"Bearer {TOKEN}", call.url

            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            assert page.evaluate("sessionStorage.length") == 0
        finally:
            context.close()


def test_app_says_when_the_provider_refuses_the_code(
    browser: Browser, provider: Provider, tmp_path: Path
) -> None:
    """A refused code leaves the user signed out, with a message naming the refusal."""
    provider.refuse = True
    with local_server(tmp_path / "server", config=sign_in_config(provider)) as server:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{server}/dicom-web/app/client/index.html")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#message")).to_contain_text(
                "Sign-in failed: the token endpoint refused the code (code refused)"
            )
            expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
            assert len(provider.authorizations) == 1
            assert provider.exchanges == []
            assert page.evaluate("sessionStorage.length") == 0
        finally:
            context.close()
