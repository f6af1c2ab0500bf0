"""The corpus of real files the tests store: orthanc-tests' files and pydicom's test files.

Several pydicom test files share a SOP Instance UID; those get a new, deterministic one (the
issue asks for it), so that every corpus file is a distinct instance.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from chalicelib.dicom.parse import MissingAttribute, UnreadableInstance, parse_instance
from tests.conftest import TESTDATA


@dataclass(frozen=True)
class CorpusFile:
    name: str
    data: bytes
    transfer_syntax_uid: str
    has_file_meta: bool
    study_uid: str
    series_uid: str
    sop_uid: str


def orthanc_files() -> list[Path]:
    """The orthanc-tests files of the shared test data folder; fails the test when there are
    none, so that a missing folder cannot turn corpus tests into empty passes."""
    files = sorted(p for p in TESTDATA.rglob("*") if p.is_file() and p.name != "README.md")
    if not files:
        pytest.fail(f"no test data under {TESTDATA} (set SHARED_DIR to the shared/ folder)")
    return files


def _pydicom_files() -> list[Path]:
    from pydicom.data import get_testdata_files

    return sorted(Path(p) for p in get_testdata_files("*.dcm"))


def _renamed(data: bytes, name: str) -> bytes:
    ds = dcmread(io.BytesIO(data), force=True)
    uid = generate_uid(entropy_srcs=[name])
    ds.SOPInstanceUID = uid
    if "MediaStorageSOPInstanceUID" in getattr(ds, "file_meta", {}):
        ds.file_meta.MediaStorageSOPInstanceUID = uid
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@functools.cache
def storable() -> tuple[CorpusFile, ...]:
    """Every corpus file that carries the four UIDs a store needs, one per SOP Instance UID."""
    files: list[CorpusFile] = []
    seen: set[str] = set()
    for path in [*orthanc_files(), *_pydicom_files()]:
        name = (
            path.name if path.is_relative_to(TESTDATA) is False else str(path.relative_to(TESTDATA))
        )
        data = path.read_bytes()
        try:
            parsed = parse_instance(data)
        except (UnreadableInstance, MissingAttribute):
            continue
        if not (parsed.study_uid and parsed.series_uid):
            continue
        if parsed.sop_instance_uid in seen:
            data = _renamed(data, name)
            parsed = parse_instance(data)
        seen.add(parsed.sop_instance_uid)
        files.append(
            CorpusFile(
                name,
                data,
                parsed.transfer_syntax_uid,
                parsed.has_file_meta,
                parsed.study_uid,
                parsed.series_uid,
                parsed.sop_instance_uid,
            )
        )
    return tuple(files)


def undecodable_jpeg() -> bytes:
    """A JPEG Baseline instance whose fragments hold nothing but their SOI marker and fill
    bytes: lossy, and no decoder plugin can read it."""
    data = bytearray((TESTDATA / "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm").read_bytes())
    for offset, length in (
        f for frame in parse_instance(bytes(data)).pixel["frames"] for f in frame
    ):
        data[offset + 2 : offset + length] = b"\xff" * (length - 2)
    return bytes(data)
