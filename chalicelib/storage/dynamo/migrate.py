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
    has_study_keys,
    modality_key,
    study_terms,
    term_actions,
    terms_condition,
    terms_of,
)
from chalicelib.storage.dynamo.table import EXISTS, STUDY_SK, Table, string, translated


def add_study_keys(client: Any, table_name: str) -> int:
    """Give the studies written before the study keys existed (their `ix` has no date) the
    items of the GSI `study_keys`, and their series its ModalitiesInStudy key; the number of
    studies upgraded. A study stored meanwhile got its keys from that store: its transaction
    here is conditioned on the `ix` read and simply fails. Keyed study searches miss a study
    until it is upgraded (or stored again)."""
    table = Table(client, table_name)
    upgraded = 0
    studies = table.pages(
        "scan",
        FilterExpression="sk = :st",
        ExpressionAttributeValues={":st": string(STUDY_SK)},
        ProjectionExpression="pk, ix, study_tags",
        ConsistentRead=True,
    )
    for item in studies:
        old = terms_of(item)
        if has_study_keys(old):
            continue
        study_uid, tags = item["pk"]["S"], json.loads(item["study_tags"]["S"])
        for series in table.query(study_uid, "SE#"):
            key = modality_key(study_uid, tags, series.get("modality", {}).get("S", ""))
            op = table.update_action(study_uid, series["sk"]["S"], key, condition=EXISTS)
            try:
                with translated():
                    client.update_item(**op)
            except ClientError as e:
                if error_code(e) != "ConditionalCheckFailedException":
                    raise  # else deleted meanwhile
        new = study_terms(study_uid, tags)
        ix = {"ix": string(json.dumps(new, sort_keys=True))}
        study = table.update_action(study_uid, STUDY_SK, ix, condition=terms_condition(old))
        if table.transact([("Update", study), *term_actions(table, study_uid, old, new)]) is None:
            upgraded += 1
    return upgraded


if __name__ == "__main__":
    import boto3

    name = sys.argv[1]
    print(f"{add_study_keys(boto3.client('dynamodb'), name)} studies of {name} upgraded")
