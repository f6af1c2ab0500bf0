"""Resource lookups and links shared by the services.

Path UIDs are checked on entry: a malformed UID names no stored resource, so it is answered
404 like an unknown one (PS3.18 §8.2, 2025b), never 5xx.
"""

from __future__ import annotations

from chalicelib.dicom.ids import is_valid_uid
from chalicelib.errors import NotFound
from chalicelib.server.http import WebRequest
from chalicelib.storage import ports


def study_url(request: WebRequest, study: str) -> str:
    return f"{request.dicomweb_root}/studies/{study}"


def series_url(request: WebRequest, study: str, series: str) -> str:
    return f"{study_url(request, study)}/series/{series}"


def instance_url(request: WebRequest, study: str, series: str, instance: str) -> str:
    return f"{series_url(request, study, series)}/instances/{instance}"


def _check(kind: str, uid: str) -> None:
    if not is_valid_uid(uid):
        raise NotFound(f"{kind} '{uid[:80]}' is not a valid UID, so no such resource exists")


def find_instances(
    request: WebRequest, study: str, series: str | None = None, instance: str | None = None
) -> list[ports.InstanceRecord]:
    """The instances of a study, series or single instance; NotFound when there are none."""
    index = request.context.index
    _check("StudyInstanceUID", study)
    if series is not None:
        _check("SeriesInstanceUID", series)
    try:
        if instance is not None:
            _check("SOPInstanceUID", instance)
            return [index.get_instance(study, series, instance)]
        records = index.list_instances(study, series)
    except ports.NotFound:
        records = []
    if not records:
        what = f"series {series} in study {study}" if series else f"study {study}"
        if instance is not None:
            what = f"instance {instance} in series {series} of study {study}"
        raise NotFound(f"no {what} is stored here")
    return records
