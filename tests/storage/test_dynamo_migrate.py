"""`add_study_keys` upgrades a table written before the study keys (GSI `study_keys`)."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.dicom.matching import Narrowing
from chalicelib.storage.dynamo import DynamoTagIndex
from chalicelib.storage.dynamo.items import KEY_VALUE_BYTES, key_value
from chalicelib.storage.dynamo.migrate import add_study_keys
from chalicelib.storage.ports import InstanceRecord
from tests.storage.conftest import TABLE, build_record

HINTS = [
    Narrowing("PatientName", "prefix", ("SM",)),
    Narrowing("PatientName", "prefix", ("SMITH^2",)),
    Narrowing("PatientID", "exact", ("PAT-1",)),
    Narrowing("AccessionNumber", "exact", ("ACC-2", "ACC-3")),
    Narrowing("ModalitiesInStudy", "exact", ("MR",)),
]


def _record(n: int, series: int = 1) -> InstanceRecord:
    study = f"1.2.{n}"
    record = build_record(
        study, f"{study}.{series}", f"{study}.{series}.1", modality=["CT", "MR"][n % 2]
    )
    record.study_tags.update(
        {
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"{['SMITH', 'DOE'][n % 2]}^{n}"}]},
            "00100020": {"vr": "LO", "Value": [f"PAT-{n % 2}"]},
            "00080050": {"vr": "SH", "Value": [f"ACC-{n}"]},
            "00080020": {"vr": "DA", "Value": [f"2020010{n}"]},
        }
    )
    return record


def _answers(index: DynamoTagIndex) -> list[list[str]]:
    return [[c.study.study_uid for c in index.search("study", [h], None)] for h in HINTS]


def _as_written_before_study_keys(dynamodb: Any) -> None:
    """Take the study keys out of the table, leaving the items as items.py wrote them before:
    no prefix key items, no kx/kd/term, no date in `ix`."""
    items = dynamodb.scan(TableName=TABLE)["Items"]
    for item in items:
        key = {"pk": item["pk"], "sk": item["sk"]}
        sk = item["sk"]["S"]
        if sk.startswith("IX#") and "*" in sk:
            dynamodb.delete_item(TableName=TABLE, Key=key)
        elif sk.startswith(("IX#", "SE#")):
            dynamodb.update_item(TableName=TABLE, Key=key, UpdateExpression="REMOVE kx, kd, term")
        elif sk == "ST":
            ix = json.loads(item["ix"]["S"])
            del ix["StudyDate"]
            dynamodb.update_item(
                TableName=TABLE,
                Key=key,
                UpdateExpression="SET ix = :ix",
                ExpressionAttributeValues={":ix": {"S": json.dumps(ix, sort_keys=True)}},
            )


def test_add_study_keys_upgrades_studies_written_before(dynamodb: Any) -> None:
    index = DynamoTagIndex(dynamodb, TABLE)
    for n in range(6):
        index.store_instance(_record(n), False)
    index.store_instance(_record(3, series=2), False)
    expected = _answers(index)
    assert all(expected), expected
    _as_written_before_study_keys(dynamodb)
    assert not any(_answers(index))  # keyed searches read only the study keys

    assert add_study_keys(dynamodb, TABLE) == 6
    assert _answers(index) == expected
    assert add_study_keys(dynamodb, TABLE) == 0


def test_store_gives_a_study_written_before_its_study_keys(dynamodb: Any) -> None:
    index = DynamoTagIndex(dynamodb, TABLE)
    index.store_instance(_record(2), False)
    _as_written_before_study_keys(dynamodb)
    index.store_instance(_record(2, series=2), False)
    assert _answers(index)[0] == ["1.2.2"]  # SM*: the prefix key items were written again


LONG_ID, LONG_MODALITY = "P" * 700, "M" * 600


def _as_written_whole(dynamodb: Any) -> None:
    """Write the long values whole in the keys `sxs` and `kx`, as items.py did before it cut
    them to KEY_VALUE_BYTES (values up to the 1,024-byte sort key limit were stored so)."""
    for item in dynamodb.scan(TableName=TABLE)["Items"]:
        value = item.get("term", item.get("modality", {})).get("S", "")
        keys = {k: item[k]["S"] for k in ("sxs", "kx") if k in item}
        whole = {k: key.replace(key_value(value), value) for k, key in keys.items()}
        if len(value) > KEY_VALUE_BYTES and whole != keys:
            dynamodb.update_item(
                TableName=TABLE,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET " + ", ".join(f"{k} = :{k}" for k in whole),
                ExpressionAttributeValues={f":{k}": {"S": v} for k, v in whole.items()},
            )


def test_add_study_keys_cuts_long_values_written_whole(dynamodb: Any) -> None:
    index = DynamoTagIndex(dynamodb, TABLE)
    record = _record(1)
    record.study_tags["00100020"]["Value"] = [LONG_ID]
    record.series_tags["00080060"] = {"vr": "CS", "Value": [LONG_MODALITY]}
    index.store_instance(record, False)
    index.store_instance(_record(2), False)
    searches = [
        ("study", Narrowing("PatientID", "exact", (LONG_ID,))),
        ("study", Narrowing("ModalitiesInStudy", "exact", (LONG_MODALITY,))),
        ("series", Narrowing("Modality", "exact", (LONG_MODALITY,))),
    ]

    def found() -> list[list[str]]:
        return [[c.study.study_uid for c in index.search(lv, [h], None)] for lv, h in searches]

    assert found() == [["1.2.1"]] * 3
    _as_written_whole(dynamodb)
    assert found() == [[]] * 3  # the search cuts the value it looks for

    assert add_study_keys(dynamodb, TABLE) == 1
    assert found() == [["1.2.1"]] * 3
    assert add_study_keys(dynamodb, TABLE) == 0
