"""One-off upgrades of an index table written by an earlier version of `items.py`.

python -m chalicelib.storage.dynamo.migrate TABLE     # after deploying; safe to run again
"""

from __future__ import annotations

import json
import sys
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.storage.aws import error_code
from chalicelib.storage.dynamo.items import (
    KEY_VALUE_BYTES,
    has_study_keys,
    long_terms,
    modality_keys,
    study_terms,
    term_actions,
    terms_condition,
    terms_of,
)
from chalicelib.storage.dynamo.table import (
    EXISTS,
    STUDY_SK,
    Table,
    Value,
    equals,
    number,
    string,
    translated,
)


def add_study_keys(client: Any, table_name: str) -> int:
    """Give the studies written before the study keys existed (their `ix` has no date) the
    items of the GSI `study_keys`, and their series its ModalitiesInStudy key; cut the values
    longer than `KEY_VALUE_BYTES` that an earlier version wrote whole in the keys `sxs` and
    `kx` (searches cut the value they look for, so they missed those). The number of studies
    upgraded. A study stored meanwhile got its keys from that store: its transaction here is
    conditioned on the `ix` read and simply fails. Keyed study searches miss a study until it
    is upgraded (or stored again)."""
    table = Table(client, table_name)
    upgraded: set[str] = set()
    studies = table.pages(
        "scan",
        FilterExpression="sk = :st",
        ExpressionAttributeValues={":st": string(STUDY_SK)},
        ProjectionExpression="pk, ix, study_tags",
        ConsistentRead=True,
    )
    for item in studies:
        old, study_uid = terms_of(item), item["pk"]["S"]
        long = long_terms(old)
        if has_study_keys(old) and not _long_terms_whole(table, study_uid, old or {}, long):
            continue
        tags = json.loads(item["study_tags"]["S"])
        if not has_study_keys(old):
            for series in table.query(study_uid, "SE#"):
                _key_series(table, study_uid, tags, series)
        new = study_terms(study_uid, tags)
        ix = {"ix": string(json.dumps(new, sort_keys=True))}
        study = table.update_action(study_uid, STUDY_SK, ix, condition=terms_condition(old))
        cut = {entry: value for entry, value in (old or {}).items() if entry not in long}
        if table.transact([("Update", study), *term_actions(table, study_uid, cut, new)]) is None:
            upgraded.add(study_uid)
    long_modalities = table.pages(
        "scan",
        FilterExpression="begins_with(sk, :se) AND size(modality) > :bytes",
        ExpressionAttributeValues={":se": string("SE#"), ":bytes": number(KEY_VALUE_BYTES)},
        ProjectionExpression="pk, sk, modality, sxs, kx",
        ConsistentRead=True,
    )
    for series in long_modalities:
        study_uid = series["pk"]["S"]
        study = table.get(study_uid, STUDY_SK, "study_tags")
        if study and _whole(series, series["modality"]["S"]):
            tags = json.loads(study["study_tags"]["S"])
            if _key_series(table, study_uid, tags, series):
                upgraded.add(study_uid)
    return len(upgraded)


def _whole(item: dict[str, Value], value: str) -> bool:
    """Whether the keys of `item` hold `value` whole (not cut to `KEY_VALUE_BYTES`)."""
    return any(value in item.get(key, {}).get("S", "") for key in ("sxs", "kx"))


def _long_terms_whole(table: Table, study_uid: str, terms: dict[str, str], long: set[str]) -> bool:
    """Whether one of the study's entries `long` has its value whole in its keys."""
    for entry in long:
        item = table.get(study_uid, f"IX#{entry}", "sxs", "kx")
        if item and _whole(item, terms[entry]):
            return True
    return False


def _key_series(
    table: Table, study_uid: str, tags: dict[str, Any], series: dict[str, Value]
) -> bool:
    """Write the modality keys of a series item; False when it was deleted or its modality
    changed meanwhile (the store that changed it wrote its keys)."""
    value = series.get("modality", {}).get("S", "")
    keys = modality_keys(study_uid, series["sk"]["S"].removeprefix("SE#"), tags, value)
    condition = equals("modality", series["modality"]) if value else EXISTS
    op = table.update_action(study_uid, series["sk"]["S"], keys, condition=condition)
    try:
        with translated():
            table.client.update_item(**op)
    except ClientError as e:
        if error_code(e) != "ConditionalCheckFailedException":
            raise
        return False
    return True


if __name__ == "__main__":
    import boto3

    name = sys.argv[1]
    print(f"{add_study_keys(boto3.client('dynamodb'), name)} studies of {name} upgraded")
