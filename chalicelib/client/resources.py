"""What a STOW job sends: the `Resources` of a request resolved to UIDs in the index.

A resource is an Orthanc identifier of a patient, study, series or instance (Orthanc manual,
"Sending DICOM resources to a STOW-RS server"), or, beyond Orthanc, `{"Study": ...,
"Series": ..., "Instance": ...}` UIDs. The index keeps Orthanc ids on its records but has no
lookup by them, so ids are resolved by reading the studies once per request (one listing, and
the instances of a study only when an id is not a patient's or a study's): give UIDs on a
large store.
"""

from __future__ import annotations

from typing import Any

from chalicelib.dicom.ids import is_valid_uid, orthanc_ids
from chalicelib.dicom.jsonmodel import json_value
from chalicelib.errors import BadRequest, NotFound, PayloadTooLarge
from chalicelib.storage import ports

ResolvedResource = list[str]
"""[study], [study, series] or [study, series, sop]."""

MAX_JOB_RESOURCES = 500
"""Resources one STOW or retrieve job may hold. Its record keeps them twice (the job's
parameters and its Content), and on AWS the record is one DynamoDB item, which stops at
400 KB: 500 resources of three 64-character UIDs take ~240 KB, leaving room for what
grows in the record as a retrieve runs, its cursor's pending series of one resource (the
stored instances are in blob chunks beside the record); 3,000 made the call a 500."""


def limit_job_resources(count: int, what: str = "Resources lists") -> None:
    """Raise PayloadTooLarge (413) when `count` resources are more than a job may hold."""
    if count > MAX_JOB_RESOURCES:
        raise PayloadTooLarge(
            f"{what} {count} resources; a job holds at most {MAX_JOB_RESOURCES}: split the request"
        )


def resolve_resources(index: ports.TagIndex, resources: Any) -> list[ResolvedResource]:
    """The UIDs of each resource, in request order (a patient gives one per study); raise
    BadRequest or NotFound (404)."""
    if not isinstance(resources, list) or not resources:
        raise BadRequest(
            "Resources must be a non-empty list of Orthanc identifiers or "
            '{"Study", "Series", "Instance"} UIDs'
        )
    limit_job_resources(len(resources))
    resolved: list[list[ResolvedResource]] = []
    wanted: dict[str, list[int]] = {}
    for position, resource in enumerate(resources):
        if isinstance(resource, dict):
            resolved.append([resolve_uids(index, resource, position)])
        elif isinstance(resource, str) and resource:
            resolved.append([])
            wanted.setdefault(resource, []).append(position)
        else:
            raise BadRequest(f"Resources[{position}] must be an Orthanc identifier or an object")
    if wanted:
        for orthanc_id, paths in _find_orthanc_ids(index, set(wanted)).items():
            for position in wanted.pop(orthanc_id):
                resolved[position] = paths
    if wanted:
        raise NotFound(f"unknown resource(s): {', '.join(sorted(wanted))} (no such Orthanc id)")
    paths = [path for paths in resolved for path in paths]
    limit_job_resources(len(paths), "the Resources resolve to")
    return paths


def uid_path(resource: dict[str, Any], position: int = 0) -> ResolvedResource:
    """`{"Study", "Series"?, "Instance"?}` as a UID path; raise BadRequest."""
    unknown = set(resource) - {"Study", "Series", "Instance"}
    if unknown:
        raise BadRequest(f"Resources[{position}] has unknown keys {sorted(unknown)}")
    if "Study" not in resource:
        raise BadRequest(f'Resources[{position}] needs "Study"')
    if "Instance" in resource and "Series" not in resource:
        raise BadRequest(
            f'Resources[{position}] has "Instance" without "Series": give the series UID too'
        )
    path = [resource[k] for k in ("Study", "Series", "Instance") if k in resource]
    for key, value in zip(("Study", "Series", "Instance"), path, strict=False):
        if not isinstance(value, str) or not is_valid_uid(value):
            raise BadRequest(f"Resources[{position}].{key} {value!r} is not a valid UID")
    return path


def resolve_uids(
    index: ports.TagIndex, resource: dict[str, Any], position: int = 0
) -> ResolvedResource:
    path = uid_path(resource, position)
    try:
        if len(path) == 3:
            index.get_instance(*path)
        elif len(path) == 2:
            index.get_series(*path)
        else:
            index.get_study(path[0])
    except ports.NotFound:
        raise NotFound(f"no stored resource {'/'.join(path)}") from None
    return path


def _find_orthanc_ids(index: ports.TagIndex, ids: set[str]) -> dict[str, list[ResolvedResource]]:
    found: dict[str, list[ResolvedResource]] = {}
    studies = list(index.iter_studies())
    for study in studies:
        patient_id = str(json_value(study.study_tags.get("00100020", {})) or "")
        patient = orthanc_ids(patient_id, study.study_uid, "", "")["patient"]
        if patient in ids:
            found.setdefault(patient, []).append([study.study_uid])
        if study.orthanc_id in ids:
            found[study.orthanc_id] = [[study.study_uid]]
    rest = ids - set(found)
    for study in studies if rest else []:
        for record in index.list_instances(study.study_uid):
            series, instance = record.orthanc_ids.get("series"), record.orthanc_ids.get("instance")
            if series in rest:
                found[series] = [[record.study_uid, record.series_uid]]
            if instance in rest:
                found[instance] = [[record.study_uid, record.series_uid, record.sop_uid]]
        rest -= set(found)
        if not rest:
            break
    return found
