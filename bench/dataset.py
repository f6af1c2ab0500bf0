"""Deterministic synthetic DICOM data for the benchmark (pydicom + numpy + Pillow).

Each study is one patient (distinct PatientName, PatientID, StudyDate) with `series_per_study`
CT series of `instances_per_series` slices, 512×512, 16 bits allocated, 12 stored, Explicit VR
Little Endian. The first study also holds one Multi-frame Grayscale Word Secondary Capture
instance (30 frames by default) and a few 8-bit slices compressed as JPEG Baseline (Process 1),
encoded with Pillow (pydicom 3.0 has no JPEG Baseline encoder) and encapsulated with pydicom.
Every value, UID and pixel derives from `seed`: the same spec gives the same bytes.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

SURNAMES = ("DOE", "SMITH", "MARTIN", "GARCIA", "MULLER", "ROSSI", "TANAKA", "NOVAK")
GIVEN_NAMES = ("JOHN", "ANNA", "LUCAS", "MARIA", "NOAH", "EMMA", "LEO", "SARA")
FIRST_STUDY_DATE = datetime.date(2019, 1, 15)
STUDY_DATE_STEP = datetime.timedelta(days=47)
SIZE = 512
MANIFEST = "manifest.json"
GENERATOR_VERSION = 1  # bump when generate() changes, so cached data sets are rebuilt


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate; the defaults are the benchmark's standard data set."""

    studies: int = 6
    series_per_study: int = 2
    instances_per_series: int = 100
    multiframe_frames: int = 30
    jpeg_instances: int = 4
    seed: int = 20260101

    def key(self) -> str:
        """A short name for this spec, used as the cache directory name."""
        text = json.dumps([GENERATOR_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Instance:
    """One generated file (its name in the data set directory) and its UIDs."""

    name: str
    study: str
    series: str
    sop: str
    size: int
    frames: int = 1
    kind: str = "ct"


@dataclass
class Manifest:
    """Everything generated, plus query values that match part of the data."""

    spec: DatasetSpec
    directory: Path
    instances: list[Instance] = field(default_factory=list)
    patient_name_wildcard: str = ""
    study_date_range: str = ""

    @property
    def total_bytes(self) -> int:
        """Sum of the file sizes."""
        return sum(item.size for item in self.instances)

    def of_kind(self, kind: str) -> list[Instance]:
        """Instances of one kind (`ct`, `multiframe`, `jpeg`), in generation order."""
        return [item for item in self.instances if item.kind == kind]

    def path(self, instance: Instance) -> Path:
        """Where the file of `instance` is."""
        return self.directory / instance.name

    def save(self) -> None:
        """Write the manifest as `manifest.json` in its directory."""
        raw = asdict(self)
        del raw["directory"]
        (self.directory / MANIFEST).write_text(json.dumps(raw, indent=1))

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        """Read the manifest that `save` wrote in `directory`."""
        raw = json.loads((directory / MANIFEST).read_text())
        return cls(
            spec=DatasetSpec(**raw["spec"]),
            directory=directory,
            instances=[Instance(**item) for item in raw["instances"]],
            patient_name_wildcard=raw["patient_name_wildcard"],
            study_date_range=raw["study_date_range"],
        )


def _uid(spec: DatasetSpec, *parts: object) -> UID:
    """A UID derived from the seed and `parts` only (pydicom hashes the entropy sources)."""
    return generate_uid(entropy_srcs=[str(spec.seed), *map(str, parts)])


def _phantom(rng: np.random.Generator) -> np.ndarray:
    """A body-like slice in stored values (HU + 1024): water ellipse, bone ring, air outside."""
    y, x = np.mgrid[-1 : 1 : SIZE * 1j, -1 : 1 : SIZE * 1j]
    ax, ay = rng.uniform(0.75, 0.9), rng.uniform(0.55, 0.7)
    radius = (x / ax) ** 2 + (y / ay) ** 2
    image = np.where(radius < 1.0, 1024 + 40, 0).astype(np.float64)
    image[(radius > 0.85) & (radius < 1.0)] = 1024 + 700
    for _ in range(3):
        cx, cy, r = rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.15)
        image[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = 1024 + rng.uniform(-100, 300)
    return image


def _slice(base: np.ndarray, rng: np.random.Generator, index: int) -> np.ndarray:
    """One slice of a series: the phantom, a slow change along z and noise, as uint16."""
    noise = rng.normal(0.0, 12.0, base.shape)
    pixels = base * (1.0 + 0.002 * np.sin(index / 7.0)) + noise
    return np.clip(pixels, 0, 4095).astype(np.uint16)


def _patient_study(spec: DatasetSpec, study: int) -> Dataset:
    """Patient and study attributes shared by every instance of a study."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"{SURNAMES[study % len(SURNAMES)]}^{GIVEN_NAMES[study % len(GIVEN_NAMES)]}"
    ds.PatientID = f"BENCH{spec.seed % 1000:03d}-{study:04d}"
    ds.PatientBirthDate = f"{1940 + study % 60}0{1 + study % 9}15"
    ds.PatientSex = "FM"[study % 2]
    ds.StudyInstanceUID = _uid(spec, "study", study)
    ds.StudyDate = (FIRST_STUDY_DATE + study * STUDY_DATE_STEP).strftime("%Y%m%d")
    ds.StudyTime = f"{8 + study % 10:02d}3000"
    ds.StudyID = f"S{study}"
    ds.AccessionNumber = f"ACC{spec.seed % 1000:03d}{study:05d}"
    ds.StudyDescription = "BENCH CHEST ABDOMEN"
    ds.ReferringPhysicianName = "REF^PHYSICIAN"
    ds.Manufacturer = "BENCH"
    return ds


def _series(ds: Dataset, spec: DatasetSpec, study: int, series: int, modality: str) -> None:
    """Set the series attributes of `ds`."""
    ds.SeriesInstanceUID = _uid(spec, "series", study, series)
    ds.SeriesNumber = series + 1
    ds.SeriesDescription = f"BENCH {modality} SERIES {series + 1}"
    ds.Modality = modality
    ds.FrameOfReferenceUID = _uid(spec, "frame-of-reference", study)


def _image_pixel(ds: Dataset, bits: int, frames: int = 1) -> None:
    """Set the Image Pixel module for monochrome `bits`-bit pixels (12 stored of 16)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = SIZE
    ds.Columns = SIZE
    ds.BitsAllocated = bits
    ds.BitsStored = 12 if bits == 16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames


def _write(ds: Dataset, sop_class: UID, sop: UID, syntax: UID, path: Path) -> int:
    """Add the SOP common and file meta attributes, write a Part 10 file, return its size."""
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.1432.1")
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size


def _ct_slice(
    patient: Dataset, spec: DatasetSpec, study: int, series: int, index: int, pixels: np.ndarray
) -> Dataset:
    """A CT Image instance (16-bit, rescale -1024/1, soft-tissue window)."""
    ds = Dataset()
    ds.update(patient)
    _series(ds, spec, study, series, "CT")
    _image_pixel(ds, 16)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [-250.0, -250.0, -1.25 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = 1.25
    ds.SliceLocation = -1.25 * index
    ds.PixelSpacing = [0.9765625, 0.9765625]
    ds.KVP = 120
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.PixelData = pixels.tobytes()
    return ds


def _jpeg_baseline(pixels: np.ndarray, quality: int = 90) -> bytes:
    """One 8-bit grayscale frame as a JPEG Baseline (Process 1) bitstream."""
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="JPEG", quality=quality, progressive=False)
    return out.getvalue()


def _window_to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Map stored CT values to 8 bits through a soft-tissue window (HU 40 / 400)."""
    hounsfield = pixels.astype(np.float64) - 1024
    return np.clip((hounsfield - (40 - 200)) / 400 * 255, 0, 255).astype(np.uint8)


def generate(spec: DatasetSpec, directory: Path) -> Manifest:
    """Write the data set of `spec` into `directory` and return its manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(spec=spec, directory=directory)
    rng = np.random.default_rng(spec.seed)
    for study in range(spec.studies):
        patient = _patient_study(spec, study)
        for series in range(spec.series_per_study):
            base = _phantom(rng)
            for index in range(spec.instances_per_series):
                sop = _uid(spec, "ct", study, series, index)
                ds = _ct_slice(patient, spec, study, series, index, _slice(base, rng, index))
                path = directory / f"ct-{study:03d}-{series:02d}-{index:04d}.dcm"
                size = _write(ds, CTImageStorage, sop, ExplicitVRLittleEndian, path)
                manifest.instances.append(
                    Instance(path.name, ds.StudyInstanceUID, ds.SeriesInstanceUID, sop, size)
                )
        if study == 0:
            _extra_series(spec, patient, rng, directory, manifest)
    first = _patient_study(spec, 0)
    manifest.patient_name_wildcard = f"{str(first.PatientName)[:3]}*"
    last_in_range = FIRST_STUDY_DATE + max(0, (spec.studies - 1) // 2) * STUDY_DATE_STEP
    manifest.study_date_range = f"{first.StudyDate}-{last_in_range:%Y%m%d}"
    return manifest


def _extra_series(
    spec: DatasetSpec,
    patient: Dataset,
    rng: np.random.Generator,
    directory: Path,
    manifest: Manifest,
) -> None:
    """Add the multi-frame instance and the JPEG Baseline series to the first study."""
    base = _phantom(rng)
    if spec.multiframe_frames:
        ds = Dataset()
        ds.update(patient)
        _series(ds, spec, 0, spec.series_per_study, "OT")
        _image_pixel(ds, 16, spec.multiframe_frames)
        ds.ConversionType = "WSD"
        ds.InstanceNumber = 1
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 40.0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        frames = [_slice(base, rng, index) for index in range(spec.multiframe_frames)]
        ds.PixelData = np.stack(frames).tobytes()
        sop = _uid(spec, "multiframe")
        path = directory / "multiframe.dcm"
        sop_class = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
        size = _write(ds, sop_class, sop, ExplicitVRLittleEndian, path)
        manifest.instances.append(
            Instance(
                path.name,
                ds.StudyInstanceUID,
                ds.SeriesInstanceUID,
                sop,
                size,
                frames=spec.multiframe_frames,
                kind="multiframe",
            )
        )
    for index in range(spec.jpeg_instances):
        ds = Dataset()
        ds.update(patient)
        _series(ds, spec, 0, spec.series_per_study + 1, "OT")
        _image_pixel(ds, 8)
        ds.ConversionType = "WSD"
        ds.InstanceNumber = index + 1
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = 8.0
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        frame = _jpeg_baseline(_window_to_8bit(_slice(base, rng, index)))
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        sop = _uid(spec, "jpeg", index)
        path = directory / f"jpeg-{index:04d}.dcm"
        size = _write(ds, SecondaryCaptureImageStorage, sop, JPEGBaseline8Bit, path)
        manifest.instances.append(
            Instance(path.name, ds.StudyInstanceUID, ds.SeriesInstanceUID, sop, size, kind="jpeg")
        )


def load_or_generate(spec: DatasetSpec, cache: Path) -> Manifest:
    """The data set of `spec` from `cache/<spec key>/`, generated there on first use."""
    directory = cache / f"dataset-{spec.key()}"
    if (directory / MANIFEST).exists():
        return Manifest.load(directory)
    manifest = generate(spec, directory)
    manifest.save()
    return manifest
