"""Unit tests of chalicelib/dicom/gdcm_plugin.py: the decoder plugins pydicom tries, in order."""

from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread
from pydicom.pixels import get_decoder, pixel_array

from chalicelib.dicom import gdcm_plugin
from chalicelib.dicom.encoding import JPEG_BASELINE_8BIT, JPEG_EXTENDED_12BIT
from tests.corpus import storable


def test_register_puts_pillow_first_and_gdcm_12bit_last() -> None:
    gdcm_plugin.register()
    for uid in gdcm_plugin.PILLOW_FIRST:
        # pydicom has no public view of the order: its decoders try `_available` in order.
        order = list(get_decoder(uid)._available)
        assert order[:3] == ["pillow", "gdcm", "pylibjpeg"], (uid, order)
    assert list(get_decoder(JPEG_EXTENDED_12BIT)._available)[-1] == gdcm_plugin.PLUGIN_LABEL


def test_pillow_first_decodes_the_corpus_jpeg_baseline_as_gdcm_did() -> None:
    """Putting Pillow first changes no pixel: every JPEG Baseline frame of the corpus decodes
    to what pydicom's GDCM plugin (its first choice with python-gdcm installed) gives."""
    gdcm_plugin.register()
    compared = []
    for item in storable():
        if item.transfer_syntax_uid != JPEG_BASELINE_8BIT:
            continue
        ds = dcmread(io.BytesIO(item.data), force=True)
        try:
            expected = pixel_array(ds, decoding_plugin="gdcm")
        except Exception:  # GDCM refuses it: nothing to compare against
            continue
        assert np.array_equal(pixel_array(ds, decoding_plugin="pillow"), expected), item.name
        compared.append(item.name)
    assert len(compared) >= 5, compared
