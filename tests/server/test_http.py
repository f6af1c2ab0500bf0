"""The shared HTTP layer: header values the services build."""

from __future__ import annotations

import pytest

from chalicelib.server.http import WARNING_MAX_VALUES, header_text, warning_header


def test_warning_header_quotes() -> None:
    assert warning_header("https://h/dicom-web", ['a "b" \\c']) == {
        "Warning": '299 https://h/dicom-web "a \\"b\\" \\\\c"'
    }


def test_warning_header_none_without_texts() -> None:
    assert warning_header("h", []) == {}


# Issue 11: a NUL or a non-Latin-1 character in a refusal reason closed the connection.
@pytest.mark.parametrize("text", ["nul \0 here", "euro €", "é", "line\r\nbreak", "tab\t"])
def test_warning_header_printable_ascii(text: str) -> None:
    value = warning_header("hôst", [text])["Warning"]
    assert all(" " <= c <= "~" for c in value), value
    assert value.startswith("299 h\\xf4st ")


def test_header_text_escapes_what_it_cannot_send() -> None:
    assert header_text("a\0é€") == "a\\x00\\xe9\\u20ac"


def test_warning_header_capped() -> None:
    """~700 refused STOW parts made a line over 64 KB, which http.client cannot read."""
    texts = [f"part {n}: " + "x" * 2000 for n in range(1, 1001)]
    value = warning_header("h", texts)["Warning"]
    assert len(value) < 8192
    assert value.count("299 h ") == WARNING_MAX_VALUES + 1
    assert value.endswith(f'"and {1000 - WARNING_MAX_VALUES} more"')


def _app_whose_context_fails(tmp_path) -> object:
    """An app whose context cannot be built after start-up (the factory raises)."""
    from chalice.test import Client

    from chalicelib.server.api import create_app
    from tests.conftest import make_context

    context = make_context("local", tmp_path, cors_allowed_origins=("https://viewer.test",))
    calls = []

    def factory() -> object:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("the settings store is unreachable")
        return context

    return Client(create_app(factory))


# Issue 11: an error outside RouteTable.dispatch fell back to Chalice's 500, without our JSON
# body or CORS headers.
def test_error_outside_dispatch_is_json_with_cors_and_request_id(tmp_path) -> None:
    import json

    with _app_whose_context_fails(tmp_path) as client:
        response = client.http.get(
            "/dicom-web/studies", headers={"Origin": "https://viewer.test", "Accept": "*/*"}
        )
    assert response.status_code == 500
    body = json.loads(response.body)
    assert body["Message"] == "internal error; the server log has the details"
    assert response.headers["Access-Control-Allow-Origin"] == "https://viewer.test"
    assert body["RequestId"] == response.headers["X-Request-Id"]


def test_every_answer_has_a_request_id_and_an_access_line(tmp_path, caplog) -> None:
    import json
    import logging

    from chalice.test import Client

    from chalicelib.server.api import create_app
    from tests.conftest import make_context

    context = make_context("local", tmp_path)
    caplog.set_level(logging.INFO, logger="chalicelib.access")
    with Client(create_app(lambda: context)) as client:
        found = client.http.get("/dicom-web/studies", headers={"Accept": "application/json"})
        missing = client.http.get("/dicom-web/studies/1.2.3", headers={"Accept": "*/*"})
    ids = [found.headers["X-Request-Id"], missing.headers["X-Request-Id"]]
    assert len(set(ids)) == 2
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "chalicelib.access"]
    assert [(line["request_id"], line["status"]) for line in lines] == [
        (ids[0], found.status_code),
        (ids[1], missing.status_code),
    ]
    assert {"method", "path", "duration_ms", "bytes"} <= set(lines[0])


def test_current_request_is_per_thread(tmp_path) -> None:
    """Issue 11: the local server answers in threads, and Chalice kept one current request
    per app: concurrent requests read each other's (a GET dispatched as a DELETE)."""
    import threading

    from chalicelib.server.api import create_app
    from tests.conftest import make_context

    context = make_context("local", tmp_path)
    app = create_app(lambda: context)
    app.current_request = "this thread's request"
    seen = []
    thread = threading.Thread(target=lambda: seen.append(app.current_request))
    thread.start()
    thread.join()
    assert seen == [None]
    assert app.current_request == "this thread's request"
