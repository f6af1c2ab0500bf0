"""Calls passed through to a remote server: `get`, `qido` and `delete` of the Orthanc
DICOMweb plugin's client API ("Making a call to QIDO-RS or WADO-RS")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chalicelib.client.registry import header_problem
from chalicelib.dicom.ids import is_valid_uid
from chalicelib.dicom.jsonmodel import tag_keyword
from chalicelib.errors import BadRequest

if TYPE_CHECKING:
    import requests

    from chalicelib.client.session import RemoteClient

DELETE_LEVELS = {
    "Study": ("StudyInstanceUID",),
    "Series": ("StudyInstanceUID", "SeriesInstanceUID"),
    "Instance": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


def string_map(body: dict[str, Any], key: str) -> dict[str, str]:
    """`HttpHeaders` or `Arguments` of a request body: an object of strings (numbers are
    taken as their text); raise BadRequest."""
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise BadRequest(f"{key} must be an object of names to text values")
    strings = {k: str(v) for k, v in value.items()}
    if key == "HttpHeaders":
        for problem in filter(None, (header_problem(k, v) for k, v in strings.items())):
            raise BadRequest(problem)
    return strings


def get(client: RemoteClient, body: dict[str, Any]) -> requests.Response:
    """GET `Uri` with `Arguments` and `HttpHeaders`; raise RemoteError for a failed call."""
    return client.get(
        body.get("Uri"), string_map(body, "Arguments"), string_map(body, "HttpHeaders")
    )


def simplified_qido(answer: Any) -> list[dict[str, Any]]:
    """Orthanc's `/servers/{name}/qido` answer: per attribute Group, Element, Name, vr and the
    first Value as text (a PN's Alphabetic group); sequences and binary values are left out."""
    if not isinstance(answer, list):
        raise ValueError("a QIDO-RS answer is a JSON array")
    results = []
    for dataset in answer:
        simplified = {}
        for key, attr in sorted(dataset.items()):
            if attr.get("vr") == "SQ" or "InlineBinary" in attr or "BulkDataURI" in attr:
                continue
            tag = int(key, 16)
            item: dict[str, Any] = {
                "Group": tag >> 16,
                "Element": tag & 0xFFFF,
                "Name": tag_keyword(tag),
                "vr": attr.get("vr", ""),
            }
            values = attr.get("Value") or []
            if values and values[0] is not None:
                first = values[0]
                item["Value"] = (
                    first.get("Alphabetic", "") if isinstance(first, dict) else str(first)
                )
            simplified[key] = item
        results.append(simplified)
    return results


def delete(client: RemoteClient, body: dict[str, Any]) -> None:
    """DELETE a study, series or instance on the remote; raise BadRequest or RemoteError."""
    if not client.server.has_delete:
        raise BadRequest(f"server {client.server.name!r} has no HasDelete: true")
    level = body.get("Level")
    if level not in DELETE_LEVELS:
        raise BadRequest(f"Level must be one of {', '.join(DELETE_LEVELS)}, not {level!r}")
    uids = []
    for key in DELETE_LEVELS[level]:
        value = body.get(key)
        if not isinstance(value, str) or not is_valid_uid(value):
            raise BadRequest(f"a {level} delete needs {key}, a valid UID, not {value!r}")
        uids.append(quote(value, safe=""))
    path = "/".join(
        f"{segment}/{uid}"
        for segment, uid in zip(("studies", "series", "instances"), uids, strict=False)
    )
    client.request("DELETE", client.server.url + path, headers=string_map(body, "HttpHeaders"))
