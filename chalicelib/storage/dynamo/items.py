"""How records are kept as items of the index table (one partition per study).

Items, keyed by partition key `pk` and sort key `sk`:

- study `pk`=StudyInstanceUID, `sk`="ST": study_tags (JSON string), orthanc_id, num_series,
  num_instances, version, modalities and sop_classes (string sets, absent when empty),
  patient_id, patient_name, study_date, accession_number (absent when empty: a DynamoDB index
  key cannot be an empty string), `ix` (JSON of the study's search index entries and its
  StudyDate, see `study_terms`), and the keys of the GSI `study_date`: `ds`="DS#{n}" (n =
  CRC-32 of the UID modulo `DATE_SHARDS`, spreading the listing over a few partitions) and
  `dk`="{YYYYMMDD}#{UID}" ("#{UID}" when the date is absent or malformed);
- search index entries `sk`="IX#{entry}" (PatientID, AccessionNumber, PatientNameA|I|P for
  each component group, case-folded by `matching.index_text`): keys `sx`="{keyword}#{first
  character}" and `sxs`="{value}#{StudyInstanceUID}" of the shared GSI `search` (prefixes by
  value), and the study keys of keyed study searches (`storage/search.py`) in the GSI
  `study_keys`: `kx`="{keyword}={value}", `kd`= the study's `dk`, `term`= the value; for a
  PatientName group also `sk`="IX#{entry}*{k}", k = 1..3, with `kx`="PatientName*{k}={first k
  characters}", `kd` and `term` (`records.prefix_keys`). Written in the store transaction only
  when the study's values or date change; a study written before the study keys existed gets
  them at its next store, or from `migrate.add_study_keys`;
- series `sk`="SE#{SeriesInstanceUID}": series_uid (key of the sparse GSI `series_uid`),
  series_tags, orthanc_id, modality, num_instances, version, `sx`="Modality#{first
  character}", `sxs`="{Modality}#{StudyInstanceUID}#{SeriesInstanceUID}" in the GSI `search`,
  and the study key `kx`="ModalitiesInStudy={Modality}", `kd`= the study's `dk` as the
  series' last store saw it;
- instance `sk`="IN#{SeriesInstanceUID}#{SOPInstanceUID}": sop_uid (key of the sparse GSI
  `sop_uid`), record (the InstanceRecord as JSON), modality, sop_class_uid, and the record's
  `FILE_ATTRIBUTES` (transfer_syntax_uid, blob_key, size, has_file_meta), which a retrieve
  reads without the record (absent on items stored before December 2026);
- SOP pointer `pk`="SOP#{SOPInstanceUID}", `sk`="SOP": `at` = the instance's pk and sk,
  written in the store transaction, so that a lookup by SOP Instance UID alone reads the base
  table consistently (the `sop_uid` GSI may lag a store: a client that stores, then
  retrieves, got 404); removed after a delete; a stale one leads to no item (not found);
- pending blob deletes `pk`="PENDING", `sk`="DEL#{random}": keys (string set), the blob keys
  of the instances one delete transaction removed, put in that transaction, or the derived
  documents' keys and folders a DELETE records before it (`add_pending_deletes`); keys leave
  the set as `blobs_deleted` confirms them, and the item goes when the set is empty;
- write intents `pk`="WRITES#{n}" (n = CRC-32 of the blob key modulo `WRITE_SHARDS`),
  `sk`="PUT#{blob key}": `at` (ISO 8601 UTC) and `write` (`ports.BlobWrite` as JSON), put
  before an instance's blobs are written, deleted after its store commits;
- config `pk`="CONFIG#{namespace}", `sk`="CF#{name}": value (JSON string).
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from chalicelib.storage.dynamo.table import (
    DATE_SHARDS,
    SERIES_INDEX,
    SOP_INDEX,
    Condition,
    Table,
    Value,
    int_of,
    number,
    optional_string,
    string,
    string_set,
)
from chalicelib.storage.ports import (
    BlobWrite,
    InstanceFile,
    InstanceRecord,
    SearchInstance,
    SeriesRecord,
    StudyRecord,
)
from chalicelib.storage.records import (
    blob_write_from_json,
    blob_write_to_json,
    first_version,
    modality,
    prefix_keys,
    record_from_json,
    record_to_json,
    search_attributes,
    search_terms,
    study_date,
    term_name,
)

KEY_VALUE_BYTES = 512
"""The longest attribute value a GSI key (`sxs`, `kx`) holds, in UTF-8 bytes. DynamoDB refuses
sort keys over 1,024 bytes and partition keys over 2,048, and non-conforming files carry values
far over their VR's length (a 3,000-character PatientID made the store fail with a
ValidationException). Stored and searched values are cut alike (`key_value`): the candidates
are a superset of the matches, which `dicom/matching.py` checks on the full values."""


def key_value(value: str) -> str:
    """`value` cut to `KEY_VALUE_BYTES` on a character boundary."""
    data = value.encode("utf-8")
    if len(data) <= KEY_VALUE_BYTES:
        return value
    return data[:KEY_VALUE_BYTES].decode("utf-8", "ignore")


def instance_sk(series_uid: str, sop_uid: str) -> str:
    return f"IN#{series_uid}#{sop_uid}"


def record_of(item: dict[str, Value]) -> InstanceRecord:
    return record_from_json(item["record"]["S"])


def search_instance_of(item: dict[str, Value]) -> SearchInstance:
    """An instance item as a search candidate: UIDs from its keys, the record decoded later."""
    _, series_uid, sop_uid = item["sk"]["S"].split("#")
    record = partial(record_from_json, item["record"]["S"])
    return SearchInstance(item["pk"]["S"], series_uid, sop_uid, record)


def study_of(item: dict[str, Value]) -> StudyRecord:
    return StudyRecord(
        study_uid=item["pk"]["S"],
        study_tags=json.loads(item["study_tags"]["S"]),
        num_series=int_of(item, "num_series"),
        num_instances=int_of(item, "num_instances"),
        modalities=sorted(item.get("modalities", {}).get("SS", [])),
        sop_classes=sorted(item.get("sop_classes", {}).get("SS", [])),
        version=int_of(item, "version"),
        orthanc_id=item.get("orthanc_id", {}).get("S", ""),
    )


def series_of(item: dict[str, Value]) -> SeriesRecord:
    return SeriesRecord(
        study_uid=item["pk"]["S"],
        series_uid=item["series_uid"]["S"],
        series_tags=json.loads(item["series_tags"]["S"]),
        num_instances=int_of(item, "num_instances"),
        version=int_of(item, "version"),
        orthanc_id=item.get("orthanc_id", {}).get("S", ""),
    )


FILE_ATTRIBUTES = ("sk", "transfer_syntax_uid", "blob_key", "size", "has_file_meta")
"""What `file_of` reads of an instance item (the projection of a retrieve's listing)."""


def file_of(study_uid: str, item: dict[str, Value]) -> InstanceFile | None:
    """The instance item's file, from its `FILE_ATTRIBUTES`; None when it has none (stored
    before they existed: its record has them)."""
    if "blob_key" not in item:
        return None
    _, series_uid, sop_uid = item["sk"]["S"].split("#")
    return InstanceFile(
        study_uid,
        series_uid,
        sop_uid,
        item["transfer_syntax_uid"]["S"],
        item["blob_key"]["S"],
        int_of(item, "size"),
        item["has_file_meta"]["BOOL"],
    )


def instance_item(record: InstanceRecord) -> dict[str, Value]:
    item = {
        "pk": string(record.study_uid),
        "sk": string(instance_sk(record.series_uid, record.sop_uid)),
        SOP_INDEX: string(record.sop_uid),
        "record": string(record_to_json(record)),
        "modality": optional_string(modality(record)),
        "sop_class_uid": optional_string(record.sop_class_uid),
        "transfer_syntax_uid": string(record.transfer_syntax_uid),
        "blob_key": string(record.blob_key),
        "size": number(record.size),
        "has_file_meta": {"BOOL": record.has_file_meta},
    }
    return {name: value for name, value in item.items() if value is not None}


def sop_pointer(record: InstanceRecord) -> dict[str, Value]:
    at = f"{record.study_uid}|{instance_sk(record.series_uid, record.sop_uid)}"
    return {"pk": string(f"SOP#{record.sop_uid}"), "sk": string("SOP"), "at": string(at)}


PENDING_PK = "PENDING"


def pending_item(keys: Iterable[str]) -> dict[str, Value] | None:
    """The intent to remove the blobs at `keys` (None when there is none)."""
    unique = set(keys)
    if not unique:
        return None
    sk = f"DEL#{uuid.uuid4().hex}"
    return {"pk": string(PENDING_PK), "sk": string(sk), "keys": {"SS": sorted(unique)}}


WRITE_SHARDS = 8
"""Partitions the write intents are spread over: every stored instance puts and deletes
one, and a partition takes about 1,000 writes a second."""


def write_key(blob_key: str) -> tuple[str, str]:
    """(pk, sk) of the write intent named by `blob_key`."""
    shard = zlib.crc32(blob_key.encode("ascii", "replace")) % WRITE_SHARDS
    return f"WRITES#{shard}", f"PUT#{blob_key}"


def write_item(write: BlobWrite) -> dict[str, Value]:
    pk, sk = write_key(write.blob_key)
    return {
        "pk": string(pk),
        "sk": string(sk),
        "at": string(write.at),
        "write": string(blob_write_to_json(write)),
    }


def write_of(item: dict[str, Value]) -> BlobWrite:
    return blob_write_from_json(item["write"]["S"])


def series_values(record: InstanceRecord) -> dict[str, Value | None]:
    value = modality(record)
    return {
        "series_tags": string(json.dumps(record.series_tags)),
        "orthanc_id": string(record.orthanc_ids.get("series", "")),
        "modality": optional_string(value),
        "sx": optional_string(value and f"Modality#{value[:1]}"),
        **modality_keys(record.study_uid, record.series_uid, record.study_tags, value),
    }


def modality_keys(
    study_uid: str, series_uid: str, study_tags: dict[str, Any], value: str
) -> dict[str, Value | None]:
    """The keys of a series item by its modality: `sxs` (series searches) and its study key,
    ModalitiesInStudy = its modality at the study's date."""
    return {
        "sxs": optional_string(value and f"{key_value(value)}#{study_uid}#{series_uid}"),
        "kx": optional_string(value and f"ModalitiesInStudy={key_value(value)}"),
        "kd": optional_string(value and _date_key(study_uid, study_tags)),
    }


def _date_shard(study_uid: str) -> str:
    return f"DS#{zlib.crc32(study_uid.encode('ascii', 'replace')) % DATE_SHARDS}"


def study_values(record: InstanceRecord) -> dict[str, Value | None]:
    search = search_attributes(record.study_tags)
    return {
        "study_tags": string(json.dumps(record.study_tags)),
        "orthanc_id": string(record.orthanc_ids.get("study", "")),
        **{name: optional_string(value) for name, value in search.items()},
        "ds": string(_date_shard(record.study_uid)),
        "dk": string(_date_key(record.study_uid, record.study_tags)),
    }


def _date_key(study_uid: str, study_tags: dict[str, Any]) -> str:
    """`search.study_order` of the study: the sort key of date-ordered GSIs."""
    return f"{study_date(study_tags)}#{study_uid}"


Terms = dict[str, str]
"""The search index entries of a study: entry name → value (see `records.search_terms`), and
`_DATE` → its date key (a new date rewrites every entry: the study keys are ordered by it)."""
_DATE = "StudyDate"


def study_terms(study_uid: str, study_tags: dict[str, Any]) -> Terms:
    """The entries of a study as its `ix` attribute keeps them."""
    return {**search_terms(study_tags), _DATE: _date_key(study_uid, study_tags)}


def has_study_keys(terms: Terms | None) -> bool:
    """Whether the study's entries were written with their study keys (`ix` has the date)."""
    return terms is not None and _DATE in terms


def long_terms(terms: Terms | None) -> set[str]:
    """The entries whose value is longer than `KEY_VALUE_BYTES` (an earlier version wrote such
    values whole in the keys)."""
    return {
        entry
        for entry, value in (terms or {}).items()
        if entry != _DATE and len(value.encode("utf-8")) > KEY_VALUE_BYTES
    }


def terms_of(item: dict[str, Value] | None) -> Terms | None:
    """The entries a study item says it has; None when the study does not exist."""
    if item is None:
        return None
    return json.loads(item.get("ix", {}).get("S", "null"))


def term_actions(
    table: Table, study_uid: str, old: Terms | None, new: Terms
) -> list[tuple[str, dict[str, Any]]]:
    """Puts of the changed entries (all of them when the date changed) and deletes of the
    dropped ones, each with its prefix keys."""
    old = old or {}
    moved = old.get(_DATE) != new.get(_DATE)
    actions = [
        ("Put", table.put_action(item))
        for entry, value in new.items()
        if entry != _DATE and (moved or old.get(entry) != value)
        for item in _entry_items(study_uid, entry, value, new[_DATE])
    ]
    actions += [
        ("Delete", table.delete_action(study_uid, item["sk"]["S"]))
        for entry, value in old.items()
        if entry != _DATE and entry not in new
        for item in _entry_items(study_uid, entry, value, "")
    ]
    return actions


def _entry_items(study_uid: str, entry: str, value: str, date_key: str) -> list[dict[str, Value]]:
    """The item of a search index entry and those of its prefix keys."""
    name = term_name(entry)
    items = [
        {
            "pk": string(study_uid),
            "sk": string(f"IX#{entry}"),
            "sx": string(f"{name}#{value[:1]}"),
            "sxs": string(f"{key_value(value)}#{study_uid}"),
            "kx": string(f"{name}={key_value(value)}"),
        }
    ]
    items += [
        {
            "pk": string(study_uid),
            "sk": string(f"IX#{entry}{key.removeprefix(name)}"),
            "kx": string(f"{key}={prefix}"),
        }
        for key, prefix in prefix_keys(name, value)
    ]
    return [{**item, "kd": string(date_key), "term": string(value)} for item in items]


def terms_condition(old: Terms | None) -> Condition:
    """The study item still has the entries read (so that entries and study_tags agree)."""
    if old is None:
        return ("attribute_not_exists(#ix)", {"#ix": "ix"}, {})
    return ("#ix = :ix", {"#ix": "ix"}, {":ix": string(json.dumps(old, sort_keys=True))})


def study_additions(
    record: InstanceRecord, instances: int, series: int, also: Sequence[InstanceRecord] = ()
) -> dict[str, Value | None]:
    """What a store adds to its study item: counts, and the modalities and SOP classes of
    `record` and `also` (the other instances of one transaction)."""
    records = [record, *also]
    return {
        "num_instances": number(instances) if instances else None,
        "num_series": number(series) if series else None,
        "modalities": string_set({modality(r) for r in records}),
        "sop_classes": string_set({r.sop_class_uid for r in records}),
    }


def new_series_item(record: InstanceRecord, instances: int) -> dict[str, Value]:
    """The item of a series created with `instances` instances, `record` the last of them."""
    item = {
        "pk": string(record.study_uid),
        "sk": string(f"SE#{record.series_uid}"),
        SERIES_INDEX: string(record.series_uid),
        "num_instances": number(instances),
        "version": number(first_version()),
        **series_values(record),
    }
    return {name: value for name, value in item.items() if value is not None}
