"""QIDO-RS: the Search Transaction, PS3.18 §10.6 (2025b), on the TagIndex.

Parse the query once (`dicom/qido.py`), take candidates from the index (`TagIndex.search`,
which only narrows), decide with `dicom/matching.py`, add the computed attributes from the
index records (exact under re-store and delete), and answer DICOM JSON or, when asked,
multipart/related of DICOM XML. Imports no pydicom, numpy or Pillow (cold start).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chalicelib.dicom.ids import is_valid_uid
from chalicelib.dicom.jsonmodel import PIXEL_DATA_TAGS
from chalicelib.dicom.matching import matches, narrowing, select_attributes
from chalicelib.dicom.multipart import encode_multipart, multipart_content_type, new_boundary
from chalicelib.dicom.qido import parse_qido_query
from chalicelib.dicom.query import InvalidQuery, QidoQuery
from chalicelib.dicom.tags import DEFAULT_TAGS, INSTANCE_LEVEL_TAGS, LEVEL_TAGS, Level, lookup_tag
from chalicelib.errors import BadRequest, NotAcceptable, PayloadTooLarge
from chalicelib.server.delivery import deliver
from chalicelib.server.http import Service, WebRequest, WebResponse, json_response, warning_header
from chalicelib.server.negotiate import choose, parse_accept
from chalicelib.server.resources import instance_url, metadata_documents, series_url, study_url
from chalicelib.storage.ports import ScanBudgetExceeded, SearchCandidate

service = Service(__name__)

_DICOM_JSON = "application/dicom+json"
_DICOM_XML = "application/dicom+xml"
_UTF8 = {"vr": "CS", "Value": ["ISO_IR 192"]}
_ONLINE = {"vr": "CS", "Value": ["ONLINE"]}

_INSTANCE_TAGS = frozenset((*INSTANCE_LEVEL_TAGS, "00080005"))
"""The attributes an instance record's `instance_tags` may hold (`dicom/metadata.py`)."""

_PIXEL_DATA_TAGS = frozenset(f"{tag:08X}" for tag in PIXEL_DATA_TAGS)

_LEVELS: tuple[Level, ...] = ("study", "series", "instance")
_COMPUTED = ("00080005", "00080056", "00080061", "00080062", "00081190", "00201206", "00201208")
_INDEXED_TAGS: dict[Level, frozenset[str]] = {
    level: frozenset(
        tag
        for above in _LEVELS[: _LEVELS.index(level) + 1]
        for tag in (*LEVEL_TAGS[above], *DEFAULT_TAGS[above], *_COMPUTED)
    )
    | ({"00201209"} if level != "study" else set())
    for level in _LEVELS
}
"""The attributes the index records can answer at each level (main tags, computed ones);
NumberOfSeriesRelatedInstances (0020,1209) is a series attribute (PS3.18 §10.6.3.3, 2025b)."""
_LOWER_LEVEL: dict[Level, frozenset[str]] = {
    level: _INDEXED_TAGS["instance"] - _INDEXED_TAGS[level] for level in _LEVELS
}
"""Attributes of the levels below, never returned (PS3.18 §10.6.3.3, 2025b)."""

_INDEXED_KEYS: dict[Level, str] = {
    "study": "StudyInstanceUID, PatientID, PatientName (exact, or a prefix such as 'DOE*'), "
    "AccessionNumber, StudyDate (a date or a range) or ModalitiesInStudy",
    "series": "SeriesInstanceUID, Modality, or a study key (StudyInstanceUID, PatientID, "
    "PatientName, AccessionNumber, StudyDate), or search /studies/{study}/series",
    "instance": "SOPInstanceUID, SeriesInstanceUID, Modality, or a study key (StudyInstanceUID, "
    "PatientID, PatientName, AccessionNumber, StudyDate), or search "
    "/studies/{study}/series/{series}/instances",
}


REMAINING_COUNTED = 100
"""How many matches after a page a search counts, to fill the paging Warning. PS3.18
§8.3.4.4.1 (2025b) words it "There are {remaining} additional results that can be requested".
Counting every match would cost a read of all 100,000 studies of a plain listing of 100,000
studies to answer 10 (issue 14), so the count stops here: a page with more matches after it
says "more than 100", and a search never reads more than `offset + limit + 101` matches."""


def more_results(remaining: int | None, budget_spent: bool = False) -> str:
    """The paging Warning's text for `remaining` matches after the page (None: more than
    REMAINING_COUNTED; with `budget_spent`, at least `remaining`: the scan budget ended the
    count)."""
    if budget_spent:
        if not remaining:
            return "There may be additional results that can be requested"
        return f"There are at least {remaining} additional results that can be requested"
    count = f"more than {REMAINING_COUNTED}" if remaining is None else str(remaining)
    return f"There are {count} additional results that can be requested"


@dataclass
class SearchResult:
    """The page of results (DICOM JSON datasets), and how many matches follow it."""

    datasets: list[dict[str, Any]] = field(default_factory=list)
    remaining: int | None = 0
    """Matches after the page; None when more than `REMAINING_COUNTED`."""
    budget_spent: bool = False
    """The scan budget ended the count after a whole page: `remaining` is a lower bound."""
    unindexed: tuple[str, ...] = ()
    """includefield tags of the level that the index does not keep and that were not read."""


@service.route("/studies", "GET", scope="read")
def search_for_studies(request: WebRequest) -> WebResponse:
    """Search for all studies, PS3.18 §10.6.1 (2025b)."""
    return search(request, "study")


@service.route("/series", "GET", scope="read")
@service.route("/studies/{study}/series", "GET", scope="read")
def search_for_series(request: WebRequest, study: str | None = None) -> WebResponse:
    """Search for all series, or for the series of a study, PS3.18 §10.6.1 (2025b)."""
    return search(request, "series", study)


@service.route("/instances", "GET", scope="read")
@service.route("/studies/{study}/instances", "GET", scope="read")
@service.route("/studies/{study}/series/{series}/instances", "GET", scope="read")
def search_for_instances(
    request: WebRequest, study: str | None = None, series: str | None = None
) -> WebResponse:
    """Search for all instances, or for those of a study or series, PS3.18 §10.6.1 (2025b)."""
    return search(request, "instance", study, series)


def search(
    request: WebRequest,
    level: Level,
    study: str | None = None,
    series: str | None = None,
    budget: int | None = None,
) -> WebResponse:
    """Parse, search, shape: the one handler behind every QIDO-RS route."""
    as_xml = _negotiate(request)
    settings = request.context.settings
    try:
        query = parse_qido_query(
            level,
            request.query,
            study_uid=study,
            series_uid=series,
            max_limit=settings.qido_max_limit,
            default_limit=(
                min(settings.qido_instance_default_limit, settings.qido_max_limit)
                if level == "instance"
                else settings.qido_default_limit
            ),
        )
    except InvalidQuery as exc:
        raise BadRequest(str(exc)) from None
    if any(uid is not None and not is_valid_uid(uid) for uid in (study, series)):
        result = SearchResult()  # a malformed UID in the path names nothing stored
    else:
        result = run_search(request, query, budget or settings.qido_scan_budget)
    warnings = list(query.warnings)
    if result.unindexed:
        names = ", ".join(_label(tag) for tag in result.unindexed)
        warnings.append(
            f"The includefield attributes {names} were not returned: a {level} search answers "
            "from the main attributes the index keeps, and no single instance speaks for a "
            f"{level}; search for instances to get them (PS3.18 §10.6.3.3)"
        )
    below = [tag for tag in query.includefield if tag in _LOWER_LEVEL[level]]
    if below:
        names = ", ".join(_label(tag) for tag in below)
        warnings.append(
            f"The includefield attributes {names} were not returned: they belong to a level "
            f"below the {level}, which a {level} search does not return (PS3.18 §10.6.3.3)"
        )
    if result.remaining != 0 or result.budget_spent:
        warnings.append(more_results(result.remaining, result.budget_spent))
    headers = warning_header(request.header("host", "-"), warnings)
    if not result.datasets:
        return WebResponse(204, b"", headers)  # §8.3.4.4.1: no body on zero matches
    if as_xml:
        from chalicelib.dicom.jsonmodel import json_to_xml  # lazy: loads the data dictionary

        boundary = new_boundary()
        parts = [
            ({"Content-Type": _DICOM_XML}, document) for document in json_to_xml(result.datasets)
        ]
        content_type = multipart_content_type(_DICOM_XML, boundary)
        body = encode_multipart(parts, boundary)
        return deliver(request, WebResponse(200, body, headers, content_type))
    return deliver(request, json_response(result.datasets, 200, _DICOM_JSON, headers))


def _negotiate(request: WebRequest) -> bool:
    """True for multipart/related of DICOM XML, False for DICOM JSON (PS3.18 §10.6.3.2)."""
    entries = parse_accept(request.accept)
    offers = [_DICOM_JSON, "application/json", "multipart/related"]
    chosen, entry = choose(entries, offers, "the QIDO-RS response")
    if chosen != "multipart/related":
        return False
    part_type = entry.media.params.get("type", _DICOM_XML).lower()
    if part_type != _DICOM_XML:
        raise NotAcceptable(
            f'QIDO-RS answers application/dicom+json or multipart/related; type="{_DICOM_XML}"'
            f', not multipart/related; type="{part_type}" (PS3.18 §10.6.3.2)'
        )
    return True


def run_search(request: WebRequest, query: QidoQuery, budget: int) -> SearchResult:
    """The matches in index order from `offset`, `limit` of them, and how many follow, counted
    up to `REMAINING_COUNTED`: the index is never read further (cost flat in archive size,
    issue 14)."""
    ctx = request.context
    case_sensitive = ctx.settings.qido_case_sensitive
    hints = narrowing(query, case_sensitive_pn=case_sensitive)
    listing = all(key.kind == "universal" for key in query.matches)
    decode = _reads_instance_tags(query)
    result = SearchResult()
    page: list[SearchCandidate] = []
    found = after = 0  # matches up to the end of the page, matches after it
    try:
        for candidate in ctx.index.search(query.level, hints, None if listing else budget):
            dataset = _dataset(candidate, query.level, decode)
            if not matches(query, dataset, case_sensitive_pn=case_sensitive):
                continue
            if found >= query.offset + query.limit:
                after += 1
                if after > REMAINING_COUNTED:
                    break
                continue
            if found >= query.offset:
                if not decode:
                    dataset = _dataset(candidate, query.level, True)
                result.datasets.append(_shape(request, query, candidate, dataset))
                page.append(candidate)
            found += 1
    except ScanBudgetExceeded as exceeded:
        if found >= query.offset + query.limit:  # the page is whole; only its count is cut
            result.budget_spent = True
        else:
            raise PayloadTooLarge(
                f"This {query.level} search has no indexed key and would read more than "
                f"{exceeded.budget} {query.level} records; add a key that the index answers: "
                f"{_INDEXED_KEYS[query.level]} (PS3.18 §8.3.4)"
            ) from exceeded
    result.remaining = after if after <= REMAINING_COUNTED else None
    unindexed = tuple(
        tag
        for tag in query.includefield
        if tag not in _INDEXED_TAGS[query.level] and tag not in _LOWER_LEVEL[query.level]
    )
    if query.level == "instance" and (unindexed or query.include_all):
        _include_from_metadata(request, page, result.datasets, unindexed, query.include_all)
    else:
        result.unindexed = unindexed
    return result


def _include_from_metadata(
    request: WebRequest,
    page: list[SearchCandidate],
    datasets: list[dict[str, Any]],
    tags: tuple[str, ...],
    include_all: bool,
) -> None:
    """Add includefield attributes the index does not keep to a page of instance results,
    from each instance's precomputed metadata (PS3.18 §10.6.3.3.3, 2025b): one index read for
    the page, or a blob read per result in parallel (`resources.metadata_documents`),
    BulkDataURIs made absolute as in Retrieve Metadata. `include_all`
    (`includefield=all`) adds every attribute of the instance but its Pixel Data; the
    computed ones and SpecificCharacterSet (the answer is UTF-8) stay as the index gives them."""
    from chalicelib.dicom.metadata import resolve_base  # lazy: it imports pydicom

    records = [c.instance.record for c in page if c.instance]
    documents = metadata_documents(request, records)
    found = dict(zip((r.sop_uid for r in records), documents, strict=True))
    for dataset, candidate in zip(datasets, page, strict=True):
        text = found.get(candidate.instance.sop_uid) if candidate.instance else None
        document = json.loads(resolve_base(text, request.dicomweb_root)) if text else {}
        dataset.update({tag: document[tag] for tag in tags if tag in document})
        if include_all:
            for tag, attribute in document.items():
                if tag not in _PIXEL_DATA_TAGS:
                    dataset.setdefault(tag, attribute)
        ordered = dict(sorted(dataset.items()))
        dataset.clear()
        dataset.update(ordered)


def _label(tag: str) -> str:
    found = lookup_tag(tag)
    return f"({tag[:4]},{tag[4:]})" + (f" {found[0]}" if found else "")


def _reads_instance_tags(query: QidoQuery) -> bool:
    """Whether matching needs the instances' own attributes: an instance-level search with a
    key on an attribute that instance records keep. Any other key sees the same values in the
    parents' records alone, so the instance records are decoded only for the page."""
    return query.level == "instance" and any(
        key.kind != "universal" and key.tag in _INSTANCE_TAGS for key in query.matches
    )


def _dataset(candidate: SearchCandidate, level: Level, instance: bool) -> dict[str, Any]:
    """The attributes a candidate is matched on: its own (when `instance`) and its parents',
    with the computed attributes of PS3.18 §10.6.3.3 (2025b) taken from the index records
    (PS3.4 §C.6.1.1)."""
    study = candidate.study
    dataset = dict(study.study_tags)
    dataset["00201206"] = {"vr": "IS", "Value": [study.num_series]}
    dataset["00201208"] = {"vr": "IS", "Value": [study.num_instances]}
    if study.modalities:
        dataset["00080061"] = {"vr": "CS", "Value": list(study.modalities)}
    if study.sop_classes:
        dataset["00080062"] = {"vr": "UI", "Value": list(study.sop_classes)}
    dataset["00080056"] = _ONLINE
    if level != "study" and candidate.series is not None:
        dataset.update(candidate.series.series_tags)
        dataset["00201209"] = {"vr": "IS", "Value": [candidate.series.num_instances]}
    if instance and level == "instance" and candidate.instance is not None:
        dataset.update(candidate.instance.record.instance_tags)
    return dataset


def _shape(
    request: WebRequest, query: QidoQuery, candidate: SearchCandidate, dataset: dict[str, Any]
) -> dict[str, Any]:
    """One result: the selected attributes, RetrieveURL, and SpecificCharacterSet ISO_IR 192
    (values are Unicode in the index, the answer is UTF-8)."""
    study_uid = candidate.study.study_uid
    if query.level == "study":
        url = study_url(request, study_uid)
    elif query.level == "series" and candidate.series is not None:
        url = series_url(request, study_uid, candidate.series.series_uid)
    else:
        assert candidate.series is not None and candidate.instance is not None
        url = instance_url(
            request, study_uid, candidate.series.series_uid, candidate.instance.sop_uid
        )
    dataset["00081190"] = {"vr": "UR", "Value": [url]}
    selected = select_attributes(query, dataset, query.level)
    selected["00080005"] = _UTF8
    return dict(sorted(selected.items()))


__all__ = ["search", "service"]
