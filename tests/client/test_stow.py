"""The check of every STOW-RS answer a job receives (Store Instances Response, PS3.18
§10.5.3, 2025b) and the batch bounds."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chalicelib.client.http import RemoteError
from chalicelib.client.proxy import simplified_qido
from chalicelib.client.stow import check_store_answer, next_batch
from chalicelib.config import Settings
from tests.storage.conftest import build_record

BATCH = [build_record(sop="1.2.3.1.1"), build_record(sop="1.2.3.1.2")]


def referenced(*uids: str) -> dict:
    return {
        "00081199": {
            "vr": "SQ",
            "Value": [{"00081155": {"vr": "UI", "Value": [u]}} for u in uids],
        }
    }


def test_every_instance_referenced_passes() -> None:
    check_store_answer(
        "peer", BATCH, 200, json.dumps(referenced("1.2.3.1.1", "1.2.3.1.2")).encode()
    )


def test_missing_instance_is_named() -> None:
    with pytest.raises(
        RemoteError, match=r"not in ReferencedSOPSequence \(0008,1199\): 1\.2\.3\.1\.2"
    ):
        check_store_answer("peer", BATCH, 200, json.dumps(referenced("1.2.3.1.1")).encode())


def test_failed_instance_names_its_reason() -> None:
    answer = referenced("1.2.3.1.1") | {
        "00081198": {
            "vr": "SQ",
            "Value": [
                {
                    "00081155": {"vr": "UI", "Value": ["1.2.3.1.2"]},
                    "00081197": {"vr": "US", "Value": [0xC000]},
                }
            ],
        }
    }
    with pytest.raises(RemoteError) as raised:
        check_store_answer("peer", BATCH, 409, json.dumps(answer).encode())
    assert "1.2.3.1.2 in FailedSOPSequence (0008,1198) FailureReason 0xC000" in raised.value.message
    assert raised.value.status == 409 and not raised.value.transient


def test_other_failures_and_unreadable_answers_fail() -> None:
    answer = referenced("1.2.3.1.1", "1.2.3.1.2") | {
        "0008119A": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["9.9"]}}]}
    }
    with pytest.raises(RemoteError, match="OtherFailuresSequence"):
        check_store_answer("peer", BATCH, 200, json.dumps(answer).encode())
    with pytest.raises(RemoteError, match="not DICOM JSON"):
        check_store_answer("peer", BATCH, 200, b"<NativeDicomModel/>")
    with pytest.raises(RemoteError) as raised:
        check_store_answer("peer", BATCH, 503, b"")
    assert raised.value.transient


def test_batch_bounded_by_count_and_size() -> None:
    records = [replace(build_record(sop=f"1.2.3.1.{n}"), size=1024 * 1024) for n in range(1, 8)]
    assert len(next_batch(records, Settings(stow_max_instances=5, stow_max_size=3))) == 3
    assert len(next_batch(records, Settings(stow_max_instances=2, stow_max_size=3))) == 2
    assert len(next_batch(records, Settings(stow_max_instances=10, stow_max_size=0))) == 7
    big = [replace(records[0], size=50 * 1024 * 1024)]
    assert len(next_batch(big, Settings(stow_max_size=3))) == 1  # alone, never skipped


def test_simplified_qido_is_orthancs_shape() -> None:
    answer = [
        {
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00201208": {"vr": "IS", "Value": [12]},
            "00080050": {"vr": "SH"},
            "00081111": {"vr": "SQ", "Value": [{}]},
        }
    ]
    (simplified,) = simplified_qido(answer)
    assert simplified["00100010"] == {
        "Group": 0x10,
        "Element": 0x10,
        "Name": "PatientName",
        "vr": "PN",
        "Value": "Doe^Jane",
    }
    assert simplified["00201208"]["Value"] == "12"
    assert "Value" not in simplified["00080050"] and "00081111" not in simplified
