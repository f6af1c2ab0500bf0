"""Ingest's reading without pydicom's Dataset (`rawread`) gives what the pydicom path gives:
the same facts, the same metadata document byte for byte, the same refusals."""

from __future__ import annotations

import dataclasses
import gzip
import io
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.data import get_testdata_file

from chalicelib.dicom.encoding import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from chalicelib.dicom.metadata import describe_dataset
from chalicelib.dicom.parse import (
    LONG_VRS,
    MissingAttribute,
    ParsedInstance,
    UnreadableInstance,
    parse_instance,
)
from chalicelib.dicom.rawread import read_instance, read_raw
from tests.conftest import testdata
from tests.corpus import orthanc_files, storable

THRESHOLD, DEPTH = 1024, 16


def _facts(parsed: ParsedInstance) -> dict[str, Any]:
    facts = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}
    return {**facts, "dataset": None, "data": bytes(facts["data"])}


def _part_of_a_body(data: bytes) -> memoryview:
    """`data` as STOW-RS hands it to ingest: a view of a multipart body, not a copy."""
    head = b"--b\r\nContent-Type: application/dicom\r\n\r\n"
    return memoryview(head + data + b"\r\n--b--\r\n")[len(head) : len(head) + len(data)]


def _pydicom_outcome(data: bytes, depth: int = DEPTH) -> tuple[Any, ...]:
    """What ingest got of `data` before `rawread`: a refusal as the type and text of what was
    raised (ingest answers from those), else the facts and the description."""
    try:
        parsed = parse_instance(data)
    except (UnreadableInstance, MissingAttribute) as exc:
        return ("unreadable", type(exc), str(exc))
    except Exception as exc:
        return ("crashed", type(exc), str(exc))
    try:
        described = describe_dataset(parsed, THRESHOLD, depth)
    except Exception as exc:
        return ("failed", _facts(parsed), type(exc), str(exc))
    return ("read", _facts(parsed), described)


def _raw_outcome(data: bytes, depth: int = DEPTH) -> tuple[Any, ...] | None:
    """What the raw walk reads of `data` in a request body, or None when it leaves `data` to
    the pydicom path (`read_instance` then returns `parse_instance`'s result, or raises what
    it raises)."""
    try:
        parsed, described = read_raw(_part_of_a_body(data), THRESHOLD, depth)
    except Exception:
        return None
    return ("read", _facts(parsed), described)


def _implicit_images() -> list[tuple[str, bytes]]:
    """pydicom's CT_small (signed pixels) and MR_small (made unsigned) saved in Implicit VR
    Little Endian, as many archives send images, without their private elements (those go
    to pydicom)."""
    copies = []
    for name, pixel_representation in (("CT_small.dcm", 1), ("MR_small.dcm", 0)):
        ds = dcmread(get_testdata_file(name))
        ds.remove_private_tags()
        ds.PixelRepresentation = pixel_representation
        ds.file_meta.TransferSyntaxUID = IMPLICIT_VR_LITTLE_ENDIAN
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        copies.append((f"implicit {name}", out.getvalue()))
    return copies


def test_raw_read_equals_pydicom_on_the_corpus() -> None:
    """On every corpus file the raw walk reads, it gives what pydicom's path gives (the
    metadata document byte for byte, bulk and pixel locations, level tags, Patient ID); it
    reads nothing that path refuses, and it reads the ordinary files of both little endian
    syntaxes, with and without sequences, native and encapsulated, and implicit VR images
    (Pixel Data OW, "US or SS" decided by Pixel Representation)."""
    files = [(str(path), path.read_bytes()) for path in orthanc_files()]
    files += [(item.name, item.data) for item in storable()]  # pydicom's test files too
    files += _implicit_images()
    assert len(files) > 50
    kinds: set[str] = set()
    for name, data in files:
        outcome = _raw_outcome(data)
        if outcome is None:
            continue
        assert outcome == _pydicom_outcome(data), name
        facts, document = outcome[1], gzip.decompress(outcome[2].document)
        kinds.add(facts["transfer_syntax_uid"])
        kinds.add("sequence" if b'"vr":"SQ","Value"' in document else "flat")
        kinds.add("encapsulated" if facts["pixel"].get("encapsulated") else "native")
        if facts["transfer_syntax_uid"] == IMPLICIT_VR_LITTLE_ENDIAN and facts["pixel"]:
            kinds.add("implicit pixels")
            # Smallest/Largest Image Pixel Value, Pixel Padding Value: "US or SS"
            ambiguous = re.search(rb'"002801(?:06|07|20)":\{"vr":"(US|SS)"', document)
            kinds.add(f"implicit {ambiguous[1].decode()}" if ambiguous else "")
    assert {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN} <= kinds
    assert {"sequence", "flat", "encapsulated", "native"} <= kinds
    assert {"implicit pixels", "implicit US", "implicit SS"} <= kinds


def _reencoded(data: bytes, header: bytes, vr: bytes, value: Any) -> bytes | None:
    """`data` with the first explicit VR element of 2-byte length starting with `header` (its
    tag and VR) written with `vr` and the value `value(old value)` (None if there is none)."""
    position = data.find(header)
    if position < 0:
        return None
    (length,) = struct.unpack_from("<H", data, position + 6)
    old = data[position + 8 : position + 8 + length]
    new = value(old)
    size = struct.pack("<H", len(new)) if vr not in LONG_VRS else struct.pack("<HL", 0, len(new))
    return data[: position + 4] + vr + size + new + data[position + 8 + length :]


def _variants(data: bytes) -> list[bytes]:
    """Cuts of the header and of the first and last Pixel Data bytes, bytes added at the end,
    element header bytes overwritten (VRs that are unknown, UN or SQ, lengths), a Transfer
    Syntax UID with a leading space and a Patient ID of VR OB."""
    pixel = data.find(b"\xe0\x7f\x10\x00")
    header_end = len(data) if pixel < 0 else min(len(data), pixel + 64)
    variants = [data[:size] for size in range(0, header_end, 7)]
    variants += [data[: len(data) - cut] for cut in (1, 2, 8, 100)] + [data + b"\x08\x00"]
    for number, position in enumerate(range(132, header_end - 8, 5)):
        patch = (b"UN", b"SQ", b"XX", b"\xff\xff")[number % 4]
        variants.append(data[:position] + patch + data[position + 2 :])
    spaced = _reencoded(data, b"\x02\x00\x10\x00UI", b"UI", lambda uid: b" " + uid.rstrip(b"\0"))
    binary = _reencoded(data, b"\x10\x00\x20\x00LO", b"OB", lambda text: text)
    return variants + [variant for variant in (spaced, binary) if variant is not None]


def test_raw_read_refuses_what_pydicom_refuses() -> None:
    """Truncated, padded and corrupted variants of small files the raw walk reads (explicit
    and implicit VR, sequences, native and encapsulated Pixel Data, OD/OF/OL values) end as
    the pydicom path ends them: the same refusal, or the same facts and document. Sequences
    nested too deep go to the pydicom path, which names the sequence."""
    files = [
        testdata(name).read_bytes()
        for name in (
            "MultiframeWindowing.dcm",
            "2026-03-16-OD-OF-OL.dcm",
            "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm",
        )
    ]
    files.append(Path(get_testdata_file("rtplan.dcm")).read_bytes())  # implicit VR
    files.append(_implicit_images()[0][1])  # implicit VR Pixel Data, "US or SS"
    outcomes: Counter[str] = Counter()
    for data in files:
        assert _raw_outcome(data) is not None
        for variant in _variants(data):
            expected = _pydicom_outcome(variant)
            outcome = _raw_outcome(variant)
            assert outcome in (None, expected)
            outcomes[expected[0] if outcome is None else "read raw"] += 1
        flat = _raw_outcome(data, depth=0)
        assert flat in (None, _pydicom_outcome(data, depth=0))
        outcomes["too deep"] += flat is None
    assert outcomes["read raw"] > 50 and outcomes["unreadable"] > 50
    assert outcomes["too deep"] == 4  # all but the JPEG file have sequences


def test_raw_read_hands_unusual_files_to_pydicom() -> None:
    """Big endian, deflated and headerless files are read by pydicom, as before."""
    for path in (
        testdata("TransferSyntaxes/1.2.840.10008.1.2.2.dcm"),
        testdata("TransferSyntaxes/1.2.840.10008.1.2.dcm"),
        Path(get_testdata_file("image_dfl.dcm")),
    ):
        data = path.read_bytes()
        assert _raw_outcome(data) is None
        parsed, described = read_instance(_part_of_a_body(data), THRESHOLD, DEPTH)
        assert described is None and parsed.dataset is not None
        assert _facts(parsed) == _facts(parse_instance(data))
