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

from chalicelib.dicom import gdcm_plugin
from chalicelib.dicom.encoding import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    OTHER_BINARY_VRS,
    WORD_SIZE,
    pixel_word_size,
    swap_words,
)
from chalicelib.dicom.parse import UnreadableInstance


class TranscodeError(ValueError):
    """The instance cannot be re-encoded as asked; the message names the syntax and why."""


def _read_elements(ds: Dataset) -> None:
    """Convert every element pydicom has left raw, so that one it cannot read is a
    TranscodeError naming it, and writing gets each element's VR: a file whose dataset is
    Implicit VR under an explicit-VR File Meta syntax (pydicom's SC_rgb_jpeg.dcm) kept VR None
    on the elements not yet read, and dcmwrite raised TypeError on them. Run only once writing
    or swapping has failed: most files need no such pass (it costs ~1 ms an instance), and
    dcmwrite copies a raw element it could not decode as it is."""
    for tag in list(ds.keys()):
        try:
            element = ds[tag]
        except Exception as exc:
            raise TranscodeError(
                f"its element ({tag.group:04X},{tag.element:04X}) cannot be read: {exc}"
            ) from exc
        if element.VR == "SQ":
            for item in element.value:
                _read_elements(item)


def _swap_to_little_endian(ds: Dataset, bits_allocated: int = 16) -> None:
    """Byte-swap the raw values of word-based binary VRs read from a big-endian dataset
    (pydicom converts the numeric VRs itself); Pixel Data by `pixel_word_size`."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _swap_to_little_endian(item, bits_allocated)
        elif element.VR in OTHER_BINARY_VRS and element.value:
            size = WORD_SIZE[element.VR]
            if element.tag == 0x7FE00010:
                size = pixel_word_size(element.VR, bits_allocated)
            element.value = swap_words(element.value, size)


def to_explicit_little_endian(data: bytes, transfer_syntax_uid: str) -> bytes:
    """The instance re-encoded as a Part-10 file in Explicit VR Little Endian."""
    try:
        ds = dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise UnreadableInstance(f"cannot read the stored instance: {exc}") from exc
    syntax = UID(transfer_syntax_uid)
    if not syntax.is_transfer_syntax:
        raise TranscodeError(
            f"its transfer syntax {syntax} is not one this server knows, so it cannot be "
            "converted to Explicit VR Little Endian"
        )
    if syntax.is_compressed:
        gdcm_plugin.register()
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = syntax
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:
            raise TranscodeError(
                f"cannot decode {syntax.name} ({syntax}) to Explicit VR Little Endian: {exc}"
            ) from exc
    elif syntax.is_deflated:
        pass  # pydicom inflated it on reading
    elif not syntax.is_little_endian:
        try:
            _swap_to_little_endian(ds, int(ds.get("BitsAllocated", 16) or 16))
        except Exception as exc:
            _read_elements(ds)  # names the element that cannot be read
            raise TranscodeError(f"cannot be converted from big endian: {exc}") from exc
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
    try:
        return _explicit_little_endian_file(ds)
    except Exception:
        _read_elements(ds)  # names the element that cannot be read, or gives each its VR
    try:
        return _explicit_little_endian_file(ds)
    except Exception as exc:
        raise TranscodeError(f"cannot be written as Explicit VR Little Endian: {exc}") from exc


def _explicit_little_endian_file(ds: Dataset) -> bytes:
    out = io.BytesIO()
    dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
    return out.getvalue()


def to_transfer_syntax(data: bytes, transfer_syntax_uid: str, wanted: str) -> bytes:
    """The instance re-encoded losslessly in `wanted` (RLE Lossless, JPEG-LS Lossless or
    JPEG 2000 Lossless), decoding the source with pydicom's plugins first."""
    from chalicelib.dicom.pixels import ENCODABLE_SYNTAXES, one_encoder_at_a_time

    if wanted not in ENCODABLE_SYNTAXES:
        raise TranscodeError(
            f"transcoding to {wanted} is not supported; the supported syntaxes are "
            f"{', '.join(ENCODABLE_SYNTAXES)} and {EXPLICIT_VR_LITTLE_ENDIAN}"
        )
    ds = dcmread(io.BytesIO(to_explicit_little_endian(data, transfer_syntax_uid)))
    if "PixelData" in ds:
        try:
            array = ds.pixel_array
            if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
                ds.PlanarConfiguration = 0  # the array is interleaved whatever was stored
            with one_encoder_at_a_time(wanted):
                ds.compress(wanted, array)
        except Exception as exc:
            raise TranscodeError(f"cannot encode the pixels as {UID(wanted).name}: {exc}") from exc
    else:
        ds.file_meta.TransferSyntaxUID = wanted
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
