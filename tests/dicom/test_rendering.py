"""The rendering pipeline on real files, checked with Pillow, Orthanc's formulas and DCMTK."""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from chalicelib.dicom.parse import parse_instance
from chalicelib.dicom.rendering import (
    FrameOutOfRange,
    RenderError,
    RenderOptions,
    Viewport,
    Window,
    apply_window,
    fitted_size,
    render,
    render_frame,
)
from tests.conftest import testdata
from tests.corpus import undecodable_jpeg

CT = "2020-08-12-Christopher.dcm"
MULTIFRAME = "MultiframeWindowing.dcm"


def _render(name: str, frame: int = 1, **options: object) -> Image.Image:
    data = testdata(name).read_bytes()
    syntax = parse_instance(data).transfer_syntax_uid
    media_type = str(options.pop("media_type", "image/png"))
    body = render(data, syntax, frame, RenderOptions(media_type, **options))  # type: ignore[arg-type]
    return Image.open(io.BytesIO(body))


def _bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


# Orthanc's reference formulas (orthanc-tests Plugins/DicomWeb/Run.py, test_multiframe_windowing).
def _linear(x: float, c: float, w: float) -> float:
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 255.0
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0


def _linear_exact(x: float, c: float, w: float) -> float:
    if x <= c - w / 2:
        return 0.0
    if x > c + w / 2:
        return 255.0
    return (x - c) / w * 255.0 + 127.5


def _sigmoid(x: float, c: float, w: float) -> float:
    return 255.0 / (1.0 + math.exp(-4 * (x - c) / w))


def test_apply_window_matches_orthanc_formulas() -> None:
    xs = np.array([-1000.0, 0.0, 10.0, 16.0, 150.0, 333.0, 5096.0])
    for c, w in ((0, 100), (2048, 4096), (127, 256), (16, 128)):
        expected = [_linear(x, c, w) for x in xs]
        assert np.allclose(apply_window(xs, Window(c, w)), expected)
        expected = [_sigmoid(x, c, w) for x in xs]
        assert np.allclose(apply_window(xs, Window(c, w, "SIGMOID")), expected)
    assert apply_window(np.array([10.0]), Window(0, 100))[0] == pytest.approx(154.545454545)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_render_multiframe_windowing_per_frame_rescale(function: str) -> None:
    """Frames 1..4 carry intercept 0/100 and slope 1/2 in per-frame functional groups."""
    reference = {"LINEAR": _linear, "LINEAR_EXACT": _linear_exact, "SIGMOID": _sigmoid}[function]
    for frame, (intercept, slope) in enumerate(((0, 1), (100, 1), (0, 2), (100, 2)), start=1):
        image = _render(MULTIFRAME, frame, window=Window(127, 256, function))
        assert image.size == (2, 2)
        for (x, y), stored in zip(
            ((0, 0), (1, 0), (0, 1), (1, 1)), (0, 0x10, 0x20, 0x30), strict=True
        ):
            expected = reference(stored * slope + intercept, 127, 256)
            assert abs(image.getpixel((x, y)) - expected) <= 1, (frame, x, y)


def test_render_frame_voi_from_functional_groups() -> None:
    """Frame 1 has a Frame VOI LUT (16/128): without a query window that window is used."""
    image = _render(MULTIFRAME, 1)
    assert abs(image.getpixel((1, 1)) - _linear(0x30, 16, 128)) <= 1


def test_render_frame_out_of_range() -> None:
    with pytest.raises(FrameOutOfRange, match="NumberOfFrames is 4"):
        _render(MULTIFRAME, 5)


def test_render_frame_native_bytes_short_of_the_frame_says_so() -> None:
    """A native frame whose bytes do not fill Rows × Columns is refused as unreadable."""
    data = testdata(CT).read_bytes()
    parsed = parse_instance(data)
    offset = parsed.pixel["offset"]
    with pytest.raises(RenderError) as refused:
        render_frame(
            data[:offset],
            data[offset : offset + 100],
            parsed.transfer_syntax_uid,
            1,
            RenderOptions("image/png"),
            encapsulated=False,
        )
    message = str(refused.value)
    assert message.startswith("frame 1 cannot be decoded: the frame has 100 bytes, not Rows 512")
    assert message.endswith("so it cannot be read as an array"), message


def test_render_window_changes_pixels() -> None:
    default = np.asarray(_render(CT))
    narrow = np.asarray(_render(CT, window=Window(40, 80)))
    assert default.shape == narrow.shape == (512, 512)
    assert not np.array_equal(default, narrow)


def test_render_monochrome1_is_inverted() -> None:
    ds = pydicom.dcmread(testdata(CT))
    normal = np.asarray(_render(CT)).astype(int)
    ds.PhotometricInterpretation = "MONOCHROME1"
    data = _bytes(ds)
    body = render(data, ExplicitVRLittleEndian, 1, RenderOptions("image/png"))
    inverted = np.asarray(Image.open(io.BytesIO(body))).astype(int)
    assert np.array_equal(inverted, 255 - normal)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("ColorTestImageJ.dcm", (1000, 1000)),
        ("Issue164.dcm", (975, 743)),  # YBR_FULL_422 JPEG baseline, 87 frames
        ("LenaTwiceWithFragments.dcm", (512, 512)),  # fragmented JPEG frames
        ("TransferSyntaxes/1.2.840.10008.1.2.2.dcm", (640, 480)),  # RGB big endian
        ("TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm", (640, 480)),  # YBR_FULL_422
    ],
)
def test_render_color_files_are_rgb(name: str, size: tuple[int, int]) -> None:
    image = _render(name)
    assert image.mode == "RGB" and image.size == size
    assert np.asarray(image).std() > 10  # not a blank image (colors: see the DCMTK test)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm", (512, 400)),  # signed 16-bit, lossless
        ("TransferSyntaxes/1.2.840.10008.1.2.4.57.dcm", (1024, 1024)),  # 12-bit lossless
        ("TransferSyntaxes/1.2.840.10008.1.2.dcm", (256, 256)),  # bare ILE dataset
        ("KarstenHilbertRF.dcm", (512, 464)),  # 8-bit
    ],
)
def test_render_grayscale_syntaxes(name: str, size: tuple[int, int]) -> None:
    image = _render(name, media_type="image/jpeg")
    assert image.format == "JPEG" and image.mode == "L" and image.size == size
    assert np.asarray(image).std() > 10  # not a blank image


def test_render_undecodable_raises_render_error() -> None:
    data = undecodable_jpeg()
    with pytest.raises(RenderError, match="cannot be decoded"):
        render(data, "1.2.840.10008.1.2.4.50", 1, RenderOptions(media_type="image/png"))


def test_render_12_bit_jpeg_extended_through_gdcm() -> None:
    """pylibjpeg rejects this file ("misplaced marker segment"); the GDCM plugin decodes it."""
    image = _render("TransferSyntaxes/1.2.840.10008.1.2.4.51.dcm", media_type="image/png")
    assert image.size == (512, 512)
    assert np.asarray(image).std() > 10


def test_render_no_pixel_data() -> None:
    with pytest.raises(RenderError, match="no Pixel Data"):
        _render("Issue168.dcm")


def test_render_palette_color() -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = 2, 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ramp = np.arange(256, dtype="<u2") * 257
    for color, lut in (("Red", ramp), ("Green", ramp[::-1].copy()), ("Blue", ramp * 0)):
        setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{color}PaletteColorLookupTableData", lut.tobytes())
    ds.PixelData = bytes([0, 255, 128, 64])
    body = render(_bytes(ds), ExplicitVRLittleEndian, 1, RenderOptions("image/png"))
    image = Image.open(io.BytesIO(body))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0, 255, 0)
    assert image.getpixel((1, 0)) == (255, 0, 0)
    assert image.getpixel((0, 1)) == (128, 127, 0)


def test_fitted_size_keeps_aspect_ratio() -> None:
    assert fitted_size(512, 512, Viewport(128, 64)) == (64, 64)
    assert fitted_size(1000, 500, Viewport(100, 100)) == (100, 50)
    assert fitted_size(400, 200, Viewport(None, 100)) == (200, 100)


def test_render_viewport_size_and_source_region() -> None:
    assert _render(CT, viewport=Viewport(128, 128)).size == (128, 128)
    assert _render("ColorTestImageJ.dcm", viewport=Viewport(200, 100)).size == (100, 100)
    whole = np.asarray(_render("KarstenHilbertRF.dcm"))
    crop = _render("KarstenHilbertRF.dcm", viewport=Viewport(100, 50, 10, 20, 100, 50))
    assert crop.size == (100, 50)
    assert np.array_equal(np.asarray(crop), whole[20:70, 10:110])
    flipped = _render("KarstenHilbertRF.dcm", viewport=Viewport(100, 50, 110, 20, -100, 50))
    assert np.array_equal(np.asarray(flipped), whole[20:70, 10:110][:, ::-1])


def test_render_region_and_formats() -> None:
    image = _render(CT, region=(0.0, 0.0, 0.5, 0.25), media_type="image/gif")
    assert image.format == "GIF" and image.size == (256, 128)
    assert _render(CT, media_type="image/jpeg", quality=20).format == "JPEG"


def test_render_jpeg_is_baseline_with_the_quality_tables() -> None:
    """JPEG answers are baseline (not progressive) and carry libjpeg's tables for `quality`:
    the same as any JPEG written at that quality."""
    for quality in (20, 90):
        image = _render(CT, media_type="image/jpeg", quality=quality)
        reference = io.BytesIO()
        Image.new("L", (8, 8)).save(reference, "JPEG", quality=quality)
        assert image.quantization == Image.open(reference).quantization  # type: ignore[attr-defined]
        assert "progressive" not in image.info and "progression" not in image.info


def test_rendering_module_imports_no_pixel_libraries() -> None:
    code = (
        "import sys, chalicelib.dicom.rendering, chalicelib.server.rendered, "
        "chalicelib.server.wado_uri, chalicelib.server.delete, chalicelib.server.capabilities; "
        "print(sorted(m for m in ('numpy', 'PIL', 'pydicom') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# DCMTK reference renderings --------------------------------------------------------------


def _require_dcmj2pnm() -> str:
    path = shutil.which("dcmj2pnm")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("dcmj2pnm missing: apt-get install dcmtk")
        pytest.skip("dcmj2pnm missing: apt-get install dcmtk")
    return path


@pytest.mark.parametrize(
    ("name", "window", "dcmtk_options"),
    [
        (CT, Window(200, 800), ["+Ww", "200", "800"]),
        ("KarstenHilbertRF.dcm", None, ["+Wi", "1"]),
        ("TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm", None, ["+Wi", "1"]),
        ("ColorTestImageJ.dcm", None, []),
        ("TransferSyntaxes/1.2.840.10008.1.2.2.dcm", None, []),
        ("TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm", None, []),  # YBR_FULL_422 → RGB
        ("LenaTwiceWithFragments.dcm", None, []),
    ],
)
def test_render_matches_dcmj2pnm(
    name: str, window: Window | None, dcmtk_options: list[str], tmp_path: Path
) -> None:
    binary = _require_dcmj2pnm()
    reference = tmp_path / "reference.png"
    subprocess.run(
        [binary, "--write-png", *dcmtk_options, str(testdata(name)), str(reference)],
        check=True,
        capture_output=True,
    )
    ours = np.asarray(_render(name, window=window)).astype(int)
    theirs = np.asarray(Image.open(reference)).astype(int)
    assert ours.shape == theirs.shape
    difference = np.abs(ours - theirs)
    if "4.50" in name or "Lena" in name:
        # Lossy JPEG: two IJG-derived decoders may differ by a rounding in the upsampling and
        # color conversion; a YBR image left unconverted would differ by tens.
        assert difference.mean() < 1.5, difference.mean()
    else:
        assert difference.max() <= 1


def _frame_bytes(data: bytes, pixel: dict[str, Any], syntax: str, frame: int) -> bytes:
    """Frame `frame` as the server's FrameReader reads it (`pixels.stored_frame`)."""
    from chalicelib.dicom import pixels

    fragments = pixel["frames"][frame - 1] if pixel["encapsulated"] else None
    big = syntax == "1.2.840.10008.1.2.2"
    return pixels.stored_frame(
        pixel, frame, big, fragments, lambda start, length: data[start : start + length]
    )


def test_render_frame_equals_full_decode() -> None:
    """The two-range-read path (header, frame) renders what decoding the whole file renders,
    on every corpus file it takes: native little and big endian, and compressed frames."""
    from chalicelib.dicom.rendering import render_frame, renders_from_ranges
    from tests.corpus import storable

    checked: dict[str, int] = {}
    for item in storable():
        parsed = parse_instance(item.data)
        pixel, syntax = parsed.pixel, parsed.transfer_syntax_uid
        if not renders_from_ranges(pixel, syntax):
            continue
        options = RenderOptions(media_type="image/png")
        count = len(pixel["frames"]) if pixel["encapsulated"] else pixel["number_of_frames"]
        for frame in sorted({1, count}):
            try:
                full = render(item.data, syntax, frame, options)
            except RenderError:
                with pytest.raises(RenderError):
                    frame_bytes = _frame_bytes(item.data, pixel, syntax, frame)
                    render_frame(
                        item.data[: pixel["offset"]],
                        frame_bytes,
                        syntax,
                        frame,
                        options,
                        pixel["encapsulated"],
                    )
                continue
            fast = render_frame(
                item.data[: pixel["offset"]],
                _frame_bytes(item.data, pixel, syntax, frame),
                syntax,
                frame,
                options,
                pixel["encapsulated"],
            )
            assert np.array_equal(
                np.asarray(Image.open(io.BytesIO(fast))), np.asarray(Image.open(io.BytesIO(full)))
            ), (item.name, frame)
        checked[syntax] = checked.get(syntax, 0) + 1
    assert sum(checked.values()) >= 20, checked
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50"} <= set(
        checked
    ), checked


def _float_display(ds: Dataset, stored: np.ndarray, frame: int, window: Window | None) -> Any:
    """The per-pixel float pipeline (Modality LUT, window, MONOCHROME1) the lookup table of
    `to_display` stands for; None where a VOI LUT Sequence decides the display."""
    from chalicelib.dicom.rendering import frame_window, modality_lut

    values = modality_lut(ds, stored, frame)
    chosen = window or frame_window(ds, frame)
    if chosen is None:
        if "VOILUTSequence" in ds:
            return None
        low, high = float(values.min()), float(values.max())
        center, width = ((low + high) / 2, high - low) if high > low else (low, 1.0)
        chosen = Window(center, width, "LINEAR_EXACT")
    display = apply_window(values, chosen)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        display = 255.0 - display
    return np.rint(display).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "window",
    [None, Window(40, 400), Window(-600, 1500, "LINEAR_EXACT"), Window(100, 300, "SIGMOID")],
    ids=["instance-window", "linear", "linear-exact", "sigmoid"],
)
def test_lookup_table_equals_float_path_on_corpus(window: Window | None) -> None:
    """`to_display` looks every pixel up in a table of its 8-bit display values; on every
    grayscale integer frame of the corpus it gives exactly what the float pipeline computes
    pixel by pixel on the stored values (bits above High Bit dropped, signed values
    sign-extended, PS3.5 §8.1.1)."""
    from chalicelib.dicom.rendering import RenderError, decode_frame, to_display
    from tests.corpus import storable

    inverted = pydicom.dcmread(testdata(CT))
    inverted.PhotometricInterpretation = "MONOCHROME1"  # none in the corpus
    files = [(i.name, i.data, i.transfer_syntax_uid) for i in storable()]
    files.append(("CT as MONOCHROME1", _bytes(inverted), ExplicitVRLittleEndian))
    checked = set()
    for name, data, syntax in files:
        try:
            ds, pixels = decode_frame(data, syntax, 1)
        except RenderError:
            continue
        photometric = str(ds.get("PhotometricInterpretation", "")).strip()
        if pixels.ndim != 2 or pixels.dtype.kind not in "ui" or pixels.dtype.itemsize > 2:
            continue
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            continue
        bits = 8 * pixels.itemsize
        shift = bits - min(int(ds.get("BitsStored") or bits), bits)
        if pixels.dtype.kind == "i":
            stored = (pixels << shift) >> shift
        else:
            stored = pixels & ((1 << (bits - shift)) - 1)
        expected = _float_display(ds, stored, 1, window)
        if expected is None:
            continue
        assert np.array_equal(to_display(ds, pixels, 1, window), expected), name
        checked.add((photometric, pixels.dtype.str, shift > 0))
    # 8 and 16 bits, signed and unsigned, bits above High Bit, MONOCHROME1 and 2 were seen.
    assert len(checked) >= 4, checked
    assert any(p == "MONOCHROME1" for p, _, _ in checked), checked
    assert {d[1:] for _, d, _ in checked} >= {"u1", "u2", "i2"}, checked
    assert any(masked for _, _, masked in checked), checked


def test_lookup_table_is_built_once_per_window_and_rescale() -> None:
    """A second frame with the same bits, rescale and window reuses the table (the cache);
    another window builds another."""
    from chalicelib.dicom.rendering import _window_table, to_display

    ds = pydicom.dcmread(testdata(CT))
    pixels = ds.pixel_array
    to_display(ds, pixels, 1, Window(41, 401))
    before = _window_table.cache_info()
    to_display(ds, pixels.copy(), 1, Window(41, 401))
    after = _window_table.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    to_display(ds, pixels, 1, Window(42, 401))
    assert _window_table.cache_info().misses == before.misses + 1


def test_read_header_walk_equals_pydicom_on_corpus() -> None:
    """The header walk decodes what pydicom reads of the rendering attributes, on every corpus
    file with Pixel Data; it is taken for most (implicit and big endian, sequences of
    undefined length stepped over) and gives way to pydicom for LUT sequences and functional
    groups."""
    from chalicelib.dicom.header import read_header
    from tests.corpus import storable

    keywords = [
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PlanarConfiguration",
        "NumberOfFrames",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "WindowCenter",
        "WindowWidth",
        "RescaleIntercept",
        "RescaleSlope",
        "VOILUTFunction",
    ]
    walked: set[str] = set()
    whole: list[str] = []
    for item in storable():
        pixel = parse_instance(item.data).pixel
        if not pixel or pixel.get("deflated"):
            continue
        header = item.data[: pixel["offset"]]
        expected = pydicom.dcmread(io.BytesIO(header), stop_before_pixels=True, force=True)
        ds = read_header(header, item.transfer_syntax_uid)
        for keyword in keywords:
            # An empty value is '' or None to pydicom, absent to the walk: None either way.
            found, wanted = ds.get(keyword), expected.get(keyword)
            assert found == (None if wanted == "" else wanted), (item.name, keyword, found)
        if "SOPInstanceUID" in ds:  # pydicom read it whole
            whole.append(item.name)
            continue
        walked.add(item.transfer_syntax_uid)
        if b"\xff\xff\xff\xff" in header[132:-12]:  # not Pixel Data's own length
            walked.add("undefined length")
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "undefined length"} <= walked, walked
    assert "MultiframeWindowing.dcm" in whole  # per-frame functional groups
    assert len(walked) >= 8 and len(whole) < 10, (walked, whole)
