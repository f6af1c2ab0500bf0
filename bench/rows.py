"""What the benchmark asks each server: one `Row` per measured request, built from the data set.

`call(k)` gives the k-th request of a row; rows that must not hit a cache ("distinct instances")
give a different instance for each k, the same sequence for every server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.dataset import Instance, Manifest

JSON = "application/dicom+json"
DICOM_MULTIPART = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OCTET_MULTIPART = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@dataclass(frozen=True)
class Call:
    """A GET relative to the DICOMweb root, or to the WADO-URI endpoint when `wado_uri`."""

    path: str
    accept: str
    wado_uri: bool = False


@dataclass(frozen=True)
class Row:
    """One benchmark row: `call(k)` is the k-th request (k counts warm-up and rounds)."""

    id: str
    title: str
    call: Callable[[int], Call]
    throughput: bool = False
    count_items: bool = False


def instance_path(item: Instance) -> str:
    """The WADO-RS path of one instance."""
    return f"/studies/{item.study}/series/{item.series}/instances/{item.sop}"


def wado_uri_query(item: Instance, content_type: str) -> str:
    """A WADO-URI query (PS3.18 §9.1), built by hand: Orthanc rejects a %2F in contentType."""
    return (
        f"?requestType=WADO&studyUID={item.study}&seriesUID={item.series}"
        f"&objectUID={item.sop}&contentType={content_type}"
    )


def fixed(call: Call) -> Callable[[int], Call]:
    """The same request every time."""
    return lambda _k: call


def cycling(
    pool: list[Instance], offset: int, make: Callable[[Instance], Call]
) -> Callable[[int], Call]:
    """A different instance for each request (cold caches) from `offset`, wrapping around."""
    return lambda k: make(pool[(offset + k) % len(pool)])


def read_rows(manifest: Manifest) -> list[Row]:
    """The QIDO, WADO-RS, metadata, rendered and WADO-URI rows for this data set."""
    ct = manifest.of_kind("ct")
    first = ct[0]
    study, series = f"/studies/{first.study}", f"/studies/{first.study}/series/{first.series}"
    in_study = [item for item in manifest.instances if item.study == first.study]
    quarter = max(1, len(ct) // 4)
    page = f"limit=10&offset={len(in_study) // 2}"
    studies_page = f"limit=2&offset={manifest.spec.studies // 2}"
    rows = [
        Row("qido_studies", "QIDO /studies (all)", fixed(Call("/studies", JSON)), count_items=True),
        Row(
            "qido_studies_patient_name",
            f"QIDO /studies?PatientName={manifest.patient_name_wildcard}",
            fixed(Call(f"/studies?PatientName={manifest.patient_name_wildcard}", JSON)),
            count_items=True,
        ),
        Row(
            "qido_studies_study_date",
            f"QIDO /studies?StudyDate={manifest.study_date_range}",
            fixed(Call(f"/studies?StudyDate={manifest.study_date_range}", JSON)),
            count_items=True,
        ),
        Row(
            "qido_studies_paging",
            f"QIDO /studies?{studies_page}",
            fixed(Call(f"/studies?{studies_page}", JSON)),
            count_items=True,
        ),
        Row(
            "qido_series_of_study",
            "QIDO /studies/{study}/series",
            fixed(Call(f"{study}/series", JSON)),
            count_items=True,
        ),
        Row(
            "qido_instances_of_series",
            "QIDO /studies/{study}/series/{series}/instances",
            fixed(Call(f"{series}/instances", JSON)),
            count_items=True,
        ),
        Row(
            "qido_instances_of_study",
            "QIDO /studies/{study}/instances",
            fixed(Call(f"{study}/instances", JSON)),
            count_items=True,
        ),
        Row(
            "qido_instances_paging",
            f"QIDO /studies/{{study}}/instances?{page}",
            fixed(Call(f"{study}/instances?{page}", JSON)),
            count_items=True,
        ),
        Row(
            "wado_rs_series",
            f"WADO-RS series ({len([i for i in ct if i.series == first.series])} instances)",
            fixed(Call(series, DICOM_MULTIPART)),
            throughput=True,
        ),
        Row(
            "wado_rs_instance",
            "WADO-RS one instance",
            fixed(Call(instance_path(first), DICOM_MULTIPART)),
            throughput=True,
        ),
        Row(
            "wado_rs_frame",
            "WADO-RS frames/1 of a CT slice",
            fixed(Call(f"{instance_path(first)}/frames/1", OCTET_MULTIPART)),
            throughput=True,
        ),
        Row("metadata_series", "Metadata of a series", fixed(Call(f"{series}/metadata", JSON))),
        Row("metadata_study", "Metadata of a study", fixed(Call(f"{study}/metadata", JSON))),
        Row(
            "rendered_jpeg",
            "Rendered JPEG, distinct instances",
            cycling(ct, 0, lambda item: Call(f"{instance_path(item)}/rendered", "image/jpeg")),
        ),
        Row(
            "rendered_png",
            "Rendered PNG, distinct instances",
            cycling(ct, quarter, lambda item: Call(f"{instance_path(item)}/rendered", "image/png")),
        ),
        Row(
            "thumbnail",
            "Thumbnail (JPEG), distinct instances",
            cycling(
                ct, 2 * quarter, lambda item: Call(f"{instance_path(item)}/thumbnail", "image/jpeg")
            ),
        ),
        Row(
            "wado_uri_dicom",
            "WADO-URI application/dicom",
            fixed(Call(wado_uri_query(first, "application/dicom"), "*/*", wado_uri=True)),
            throughput=True,
        ),
        Row(
            "wado_uri_jpeg",
            "WADO-URI image/jpeg, distinct instances",
            cycling(ct, 3 * quarter, lambda i: Call(wado_uri_query(i, "image/jpeg"), "*/*", True)),
        ),
    ]
    for item in manifest.of_kind("multiframe"):
        frames = ",".join(str(n) for n in range(1, item.frames + 1))
        rows.append(
            Row(
                "wado_rs_frames_multiframe",
                f"WADO-RS frames 1-{item.frames} of the multi-frame instance",
                fixed(Call(f"{instance_path(item)}/frames/{frames}", OCTET_MULTIPART)),
                throughput=True,
            )
        )
        rows.append(
            Row(
                "rendered_frame_multiframe",
                "Rendered JPEG of one frame of the multi-frame, distinct frames",
                lambda k, item=item: Call(
                    f"{instance_path(item)}/frames/{k % item.frames + 1}/rendered", "image/jpeg"
                ),
            )
        )
    jpeg = manifest.of_kind("jpeg")
    if jpeg:
        rows.append(
            Row(
                "wado_rs_frame_jpeg_baseline",
                "WADO-RS frames/1 of a JPEG Baseline instance, as stored",
                fixed(Call(f"{instance_path(jpeg[0])}/frames/1", OCTET_MULTIPART)),
                throughput=True,
            )
        )
        rows.append(
            Row(
                "rendered_jpeg_baseline",
                f"Rendered PNG of JPEG Baseline instances (cycling over {len(jpeg)})",
                cycling(jpeg, 0, lambda item: Call(f"{instance_path(item)}/rendered", "image/png")),
            )
        )
    return rows
