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
