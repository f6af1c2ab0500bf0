"""One exception hierarchy for client-visible errors, mapped to HTTP in `server/http.py`.

Messages name the attribute, the value, the rule and the fix (see STYLE.md rule 12).
"""

from __future__ import annotations


class DicomWebError(Exception):
    """An error answered to the client with `status` and this message."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(DicomWebError):
    status = 400


class Unauthorized(DicomWebError):
    """No valid credentials: the answer carries `WWW-Authenticate` (RFC 9110 §11.6.1)."""

    status = 401


class Forbidden(DicomWebError):
    """A call the caller may not make: credentials without the scope the route needs, or a
    cross-origin form POST (`http.refuse_cross_origin_form`)."""

    status = 403


class NotFound(DicomWebError):
    status = 404


class MethodNotAllowed(DicomWebError):
    status = 405


class NotAcceptable(DicomWebError):
    status = 406


class Conflict(DicomWebError):
    status = 409


class PayloadTooLarge(DicomWebError):
    status = 413


class UriTooLong(DicomWebError):
    status = 414


class UnsupportedMediaType(DicomWebError):
    status = 415


class RangeNotSatisfiable(DicomWebError):
    status = 416


class BadGateway(DicomWebError):
    """A remote server could not be reached or gave an unusable answer."""

    status = 502
