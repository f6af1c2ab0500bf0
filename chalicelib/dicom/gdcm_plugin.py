"""A pydicom decoder plugin for JPEG Extended (Process 2 & 4) with 12-bit samples, via GDCM.

pylibjpeg rejects some 12-bit JPEG Extended files ("misplaced marker segment", e.g.
orthanc-tests `TransferSyntaxes/1.2.840.10008.1.2.4.51.dcm`), and pydicom 3.0's own GDCM
plugin refuses 12-bit precision outright, while GDCM's 12-bit libjpeg decodes them, as
Orthanc's DCMTK does. This module follows pydicom's decoder plugin interface (`is_available`,
`DECODER_DEPENDENCIES` and a frame function, pydicom guide "Pixel Data decoder plugins") and is
registered by `register()` as the last plugin of that transfer syntax, so the others are tried
first. python-gdcm is imported only when a frame is decoded (STYLE.md rules 4 and 16).

python-gdcm installed also makes pydicom try its own GDCM plugin first for every JPEG syntax.
For 8-bit JPEG Baseline and Extended, Pillow (libjpeg-turbo) gives the same pixels 2.5 to 3.5
times faster (a 512×512 grayscale frame in 1.4 ms against GDCM's 4.7 and pylibjpeg's 5.4; the
corpus' 640×480 YBR frame in 8.3 ms against 21.5), so `register()` puts it first there; the
others stay behind it, in pydicom's order, for what Pillow refuses (12-bit samples).
"""

from __future__ import annotations

import importlib.util
import threading
from typing import TYPE_CHECKING

from chalicelib.dicom.encoding import JPEG_BASELINE_8BIT, JPEG_EXTENDED_12BIT

if TYPE_CHECKING:
    from pydicom.pixels.decoders.base import DecodeRunner

DECODER_DEPENDENCIES = {JPEG_EXTENDED_12BIT: ("python-gdcm>=3.0.10",)}
PLUGIN_LABEL = "gdcm-12bit"
PILLOW_FIRST = (JPEG_BASELINE_8BIT, JPEG_EXTENDED_12BIT)
"""The syntaxes whose decoder tries Pillow first (module docstring)."""
PILLOW_BEHIND = ("gdcm", "pylibjpeg")
"""pydicom's other plugins of those syntaxes, in pydicom's order."""

_lock = threading.Lock()
_registered = False


def is_available(uid: str) -> bool:
    return uid == JPEG_EXTENDED_12BIT and importlib.util.find_spec("gdcm") is not None


def register() -> None:
    """Put Pillow first in pydicom's JPEG Baseline and Extended decoders and add this plugin
    last to JPEG Extended's, once per process: every later call is one flag check (the
    plugin methods are not thread-safe, hence the lock)."""
    global _registered
    if _registered:
        return
    from pydicom.pixels import get_decoder

    with _lock:
        if not _registered:
            for uid in PILLOW_FIRST:
                decoder = get_decoder(uid)
                # A decoder tries its plugins in the order they were added.
                for label in PILLOW_BEHIND:
                    decoder.remove_plugin(label)
                    decoder.add_plugin(label, (f"pydicom.pixels.decoders.{label}", "_decode_frame"))
            decoder = get_decoder(JPEG_EXTENDED_12BIT)
            if PLUGIN_LABEL not in decoder._available and PLUGIN_LABEL not in decoder._unavailable:
                decoder.add_plugin(PLUGIN_LABEL, (__name__, "decode_frame"))
            _registered = True


def decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One frame's JPEG bitstream decoded to native pixel bytes (GDCM Image API)."""
    import gdcm

    gdcm.Trace.WarningOff()  # GDCM reports on stderr that its 8-bit codec gave way to 12-bit
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(src)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())

    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((runner.columns, runner.rows, 1))
    image.SetDataElement(element)
    photometric = gdcm.PhotometricInterpretation.GetPIType(runner.photometric_interpretation)
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(photometric))
    if runner.samples_per_pixel > 1:
        image.SetPlanarConfiguration(runner.planar_configuration)
    syntax = gdcm.TransferSyntax.GetTSType(JPEG_EXTENDED_12BIT)
    image.SetTransferSyntax(gdcm.TransferSyntax(syntax))
    bits = runner.bits_stored
    image.SetPixelFormat(
        gdcm.PixelFormat(
            runner.samples_per_pixel,
            runner.bits_allocated,
            bits,
            bits - 1,
            runner.pixel_representation,
        )
    )
    frame = image.GetBuffer().encode("utf-8", "surrogateescape")  # GDCM returns char* as str
    if not frame:
        raise ValueError("GDCM could not decode the JPEG Extended frame")
    return frame
