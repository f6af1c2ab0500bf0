"""Re-encode a stored instance for the web: Explicit VR Little Endian with File Meta.

PS3.18 §8.7.3 (2025b) forbids Implicit VR Little Endian and Explicit VR Big Endian on the web,
and Explicit VR Little Endian is the default transfer syntax of a DICOM retrieve. Lossless and
lossy compressed sources are decoded with pydicom's pixel plugins (pylibjpeg, openjpeg, rle,
pyjpegls); the caller decides whether decoding a lossy source is acceptable.
"""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID

from chalicelib.dicom.parse import EXPLICIT_VR_LITTLE_ENDIAN, UnreadableInstance

_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class TranscodeError(ValueError):
    """The instance cannot be re-encoded as asked; the message names the syntax and why."""


def _swap_to_little_endian(ds: Dataset) -> None:
    """Byte-swap the raw values of word-based binary VRs read from a big-endian dataset."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _swap_to_little_endian(item)
        elif element.VR in _WORD_SIZE and element.value:
            import numpy as np

            size = _WORD_SIZE[element.VR]
            words = np.frombuffer(element.value, dtype=f">u{size}")
            element.value = words.astype(f"<u{size}").tobytes()


def to_explicit_little_endian(data: bytes, transfer_syntax_uid: str) -> bytes:
    """The instance re-encoded as a Part-10 file in Explicit VR Little Endian."""
    try:
        ds = dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise UnreadableInstance(f"cannot read the stored instance: {exc}") from exc
    syntax = UID(transfer_syntax_uid)
    if syntax.is_compressed:
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = syntax
        try:
            ds.decompress()
        except Exception as exc:
            raise TranscodeError(
                f"cannot decode {syntax.name} ({syntax}) to Explicit VR Little Endian: {exc}"
            ) from exc
    elif syntax.is_deflated:
        pass  # pydicom inflated it on reading
    elif not syntax.is_little_endian:
        _swap_to_little_endian(ds)
    meta = FileMetaDataset()
    for keyword in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"):
        if keyword in getattr(ds, "file_meta", Dataset()):
            setattr(meta, keyword, ds.file_meta[keyword].value)
    meta.MediaStorageSOPClassUID = meta.get("MediaStorageSOPClassUID") or ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = meta.get("MediaStorageSOPInstanceUID") or ds.SOPInstanceUID
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    validate_file_meta(meta, enforce_standard=True)
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    out = io.BytesIO()
    dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()
