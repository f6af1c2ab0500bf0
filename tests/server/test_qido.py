"""QIDO-RS over HTTP on both backends, over a generated corpus and the character set files.

The corpus: 6 patients with 2 studies each (dates over two years, CT/MR/US/SR/PT series),
one of them the large study of the benchmark (two series of 100 instances), about 320
instances in all, plus the 11 Encodings/DavidClunie files (one character set each). Expected
answers are computed from the generator's own description, not from the server.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import pytest
from chalice.test import Client
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from chalicelib.config import Settings
from chalicelib.context import Context, build_context
from chalicelib.errors import PayloadTooLarge
from chalicelib.ingest import store_instance
from chalicelib.server.api import create_app
from chalicelib.server.http import WebRequest
from chalicelib.server.qido import more_results, search
from tests.conftest import TESTDATA, make_context
from tests.server.helpers import HOST, json_of, parts_of, values

ROOT = "1.2.826.0.1.3680043.10.543"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SOP_CLASSES = {"CT": CT_IMAGE, "MR": MR_IMAGE, "US": "1.2.840.10008.5.1.4.1.1.6.1"}
SOP_CLASSES |= {"SR": "1.2.840.10008.5.1.4.1.1.88.11", "PT": "1.2.840.10008.5.1.4.1.1.128"}
PATIENTS = [
    ("P001", "Doe^John"),
    ("P002", "Doe^Jane"),
    ("P003", "Smith^Anna^Maria"),
    ("P004", "Müller^Jürgen"),
    ("P005", "O'Brien^Seán"),
    ("X-77", "Nguyen^Van^^Dr"),
]
ENCODINGS = sorted((TESTDATA / "Encodings" / "DavidClunie").iterdir())


@dataclass
class Series:
    uid: str
    modality: str
    instances: list[str]


@dataclass
class Study:
    uid: str
    patient_id: str
    patient_name: str
    date: str
    accession: str
    series: list[Series] = field(default_factory=list)

    @property
    def modalities(self) -> list[str]:
        return sorted({s.modality for s in self.series})

    @property
    def num_instances(self) -> int:
        return sum(len(s.instances) for s in self.series)


def generated_studies() -> list[Study]:
    studies = []
    modalities = ["CT", "MR", "US", "SR", "PT"]
    for p, (patient_id, name) in enumerate(PATIENTS, 1):
        for s in (1, 2):
            uid = f"{ROOT}.{p}.{s}"
            date = f"202{3 + s % 2}{(p * 2 + s) % 12 + 1:02d}{(p * 5) % 28 + 1:02d}"
            study = Study(uid, patient_id, name, date, f"ACC{p}{s}")
            big = p == 1 and s == 1
            for n in (1, 2):
                modality = modalities[(p + s + n) % len(modalities)]
                count = 100 if big else (p + n) % 4 + 3
                series_uid = f"{uid}.{n}"
                instances = [f"{series_uid}.{i}" for i in range(1, count + 1)]
                study.series.append(Series(series_uid, modality, instances))
            studies.append(study)
    return studies


STUDIES = generated_studies()
BIG = STUDIES[0]


def instance_bytes(study: Study, series: Series, number: int) -> bytes:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SOP_CLASSES[series.modality]
    ds.SOPInstanceUID = series.instances[number - 1]
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study.date
    ds.StudyTime = "101500"
    ds.AccessionNumber = study.accession
    ds.StudyID = "1"
    ds.StudyDescription = f"Study of {study.patient_id}"
    ds.ReferringPhysicianName = "Ref^Doc"
    ds.Modality = series.modality
    ds.SeriesNumber = int(series.uid.rsplit(".", 1)[1])
    ds.SeriesDescription = f"{series.modality} series"
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = 8
    ds.DeviceSerialNumber = "SN-7"  # kept in the metadata document only, not in the index
    ds.BitsAllocated = 16
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ingest_corpus(ctx: Context) -> None:
    for study in STUDIES:
        for series in study.series:
            for number in range(1, len(series.instances) + 1):
                result = store_instance(ctx, instance_bytes(study, series, number))
                assert result.status == "stored", result.message
    assert len(ENCODINGS) >= 10, f"the Encodings corpus under {TESTDATA} is missing"
    for path in ENCODINGS:
        assert store_instance(ctx, path.read_bytes()).status == "stored", path.name


@pytest.fixture(scope="module", params=["local", "aws"])
def corpus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Client, Context]]:
    """One corpus per backend for the whole module (it is only read)."""
    tmp_path = tmp_path_factory.mktemp(f"qido-{request.param}")
    if request.param == "local":
        ctx = make_context("local", tmp_path)
        ingest_corpus(ctx)
        yield Client(create_app(lambda: ctx)), ctx
        return
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env.setenv(name, "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            ctx = make_context("aws", tmp_path)
            ingest_corpus(ctx)
            yield Client(create_app(lambda: ctx)), ctx


def get(client: Client, path: str, accept: str = "application/dicom+json") -> Any:
    return client.http.get(f"/dicom-web{path}", headers={"Accept": accept, "Host": HOST})


def found(response: Any, tag: str) -> list[str]:
    assert response.status_code in (200, 204), response.body
    return [values(item, tag)[0] for item in json_of(response) or []]


def newest_first(studies: list[Study]) -> list[str]:
    return [s.uid for s in sorted(studies, key=lambda s: (s.date, s.uid), reverse=True)]


STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def test_search_for_studies_by_patient_id_computed_attributes(corpus) -> None:
    client, _ = corpus
    response = get(client, "/studies?PatientID=P001")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    assert "Warning" not in response.headers
    results = json_of(response)
    expected = [s for s in STUDIES if s.patient_id == "P001"]
    assert [values(r, STUDY_UID)[0] for r in results] == newest_first(expected)
    for result in results:
        study = next(s for s in expected if s.uid == values(result, STUDY_UID)[0])
        assert values(result, "00201206") == [len(study.series)]
        assert values(result, "00201208") == [study.num_instances]
        assert values(result, "00080061") == study.modalities
        assert values(result, "00080005") == ["ISO_IR 192"]
        assert values(result, "00081190") == [f"http://{HOST}/dicom-web/studies/{study.uid}"]
        assert values(result, "00100010") == [{"Alphabetic": study.patient_name}]
        assert values(result, "00080056") == ["ONLINE"]
        assert "00081030" not in result  # StudyDescription: not a default attribute
        assert "00080060" not in result  # a series attribute never comes at study level
        assert list(result) == sorted(result)


@pytest.mark.parametrize(
    ("query", "patients"),
    [
        ("PatientName=doe^john", {"P001"}),
        ("PatientName=DOE*", {"P001", "P002"}),
        ("PatientName=*an*", {"P002", "P003", "X-77"}),  # and Wang^XiaoDong of Encodings
        ("PatientName=müller*", {"P004"}),
        ("PatientName=jurgen&fuzzymatching=true", {"P004"}),
        ("PatientName=sean%20o&fuzzymatching=true", {"P005"}),
        ("PatientID=P00*", {"P001", "P002", "P003", "P004", "P005"}),
        ("AccessionNumber=ACC3*", {"P003"}),
        ("PatientID=P001,P002", set()),  # a comma is not a list separator on LO
        ("PatientID=P001%5CP002", {"P001", "P002"}),
    ],
)
def test_search_for_studies_matching(corpus, query: str, patients: set[str]) -> None:
    client, _ = corpus
    expected = newest_first([s for s in STUDIES if s.patient_id in patients])
    results = found(get(client, f"/studies?{query}&limit=1000"), STUDY_UID)
    assert [uid for uid in results if uid.startswith(ROOT)] == expected


def test_search_for_studies_date_range_and_uid_list(corpus) -> None:
    client, _ = corpus
    in_2024 = [s for s in STUDIES if s.date.startswith("2024")]
    assert found(get(client, "/studies?StudyDate=20240101-20241231"), STUDY_UID) == (
        newest_first(in_2024)
    )
    assert found(get(client, "/studies?StudyDate=-20231231&limit=1000"), STUDY_UID) == (
        newest_first([s for s in STUDIES if s not in in_2024])
    )
    picked = [STUDIES[3], STUDIES[7]]
    uids = ",".join(s.uid for s in picked)
    assert found(get(client, f"/studies?StudyInstanceUID={uids}"), STUDY_UID) == (
        newest_first(picked)
    )
    ohif = "%5C".join(s.uid for s in picked)  # OHIF separates UIDs with backslashes
    assert found(get(client, f"/studies?StudyInstanceUID={ohif}"), STUDY_UID) == (
        newest_first(picked)
    )


def test_search_for_studies_modalities_in_study(corpus) -> None:
    client, _ = corpus
    expected = newest_first([s for s in STUDIES if "PT" in s.modalities])
    assert found(get(client, "/studies?ModalitiesInStudy=PT"), STUDY_UID) == expected


def test_search_for_studies_modality_as_modalities_in_study(corpus) -> None:
    """OHIF sends Modality at study level: matched as ModalitiesInStudy, with a Warning."""
    client, _ = corpus
    response = get(client, "/studies?Modality=PT&limit=1000")
    assert found(response, STUDY_UID) == newest_first([s for s in STUDIES if "PT" in s.modalities])
    assert "(0008,0061) ModalitiesInStudy" in response.headers["Warning"]
    assert all("00080060" not in r for r in json_of(response))


def test_search_for_series_all_with_parent_attributes(corpus) -> None:
    client, _ = corpus
    response = get(client, "/series?Modality=MR&limit=1000")
    expected = sorted((s.uid, se.uid) for s in STUDIES for se in s.series if se.modality == "MR")
    results = json_of(response)
    assert [(values(r, STUDY_UID)[0], values(r, SERIES_UID)[0]) for r in results] == expected
    for result in results:
        study = next(s for s in STUDIES if s.uid == values(result, STUDY_UID)[0])
        series = next(se for se in study.series if se.uid == values(result, SERIES_UID)[0])
        assert values(result, "00201209") == [len(series.instances)]
        assert values(result, "00100020") == [study.patient_id]  # parent, not constrained
        assert values(result, "00201208") == [study.num_instances]
        assert values(result, "00081190") == [
            f"http://{HOST}/dicom-web/studies/{study.uid}/series/{series.uid}"
        ]


def test_search_for_series_of_study_without_study_attributes(corpus) -> None:
    client, _ = corpus
    response = get(client, f"/studies/{BIG.uid}/series")
    results = json_of(response)
    assert [values(r, SERIES_UID)[0] for r in results] == [se.uid for se in BIG.series]
    assert all("00100020" not in r for r in results)
    assert [values(r, "00201209") for r in results] == [[100], [100]]
    assert get(client, "/studies/1.2.3.999/series").status_code == 204
    assert get(client, "/studies/not-a-uid/series").status_code == 204


def test_search_for_instances_of_series_and_study(corpus) -> None:
    client, _ = corpus
    series = BIG.series[0]
    response = get(client, f"/studies/{BIG.uid}/series/{series.uid}/instances?limit=1000")
    results = json_of(response)
    assert sorted(found(response, SOP_UID)) == sorted(series.instances)
    first = results[0]
    assert values(first, "00080016") == [SOP_CLASSES[series.modality]]
    assert values(first, "00280010") == [8]
    assert values(first, "00081190")[0].endswith(
        f"/studies/{BIG.uid}/series/{series.uid}/instances/{values(first, SOP_UID)[0]}"
    )
    assert "00100020" not in first and "00080060" not in first  # parents are constrained
    study_wide = get(client, f"/studies/{BIG.uid}/instances?limit=1000")
    assert len(json_of(study_wide)) == 200
    # Without a limit an instance search lists the whole study (QidoInstanceDefaultLimit),
    # while a study listing keeps its page of QidoDefaultLimit.
    whole = get(client, f"/studies/{BIG.uid}/instances")
    assert len(json_of(whole)) == 200 and "Warning" not in whole.headers
    assert all(values(r, "00080060") for r in json_of(study_wide))  # series attributes


def test_search_for_instances_page_and_instance_keys(corpus) -> None:
    """A page of a study's instances is the slice of the full listing, whole (attributes of
    the instance records decoded for the page only); keys on instance attributes still match."""
    client, _ = corpus
    listing = json_of(get(client, f"/studies/{BIG.uid}/instances?limit=1000"))
    response = get(client, f"/studies/{BIG.uid}/instances?limit=10&offset=102")
    assert json_of(response) == listing[102:112]
    assert response.headers["Warning"] == f'299 {HOST} "{more_results(88)}"'
    assert "88 additional results" in response.headers["Warning"]  # PS3.18 §8.3.4.4.1 wording
    numbered = json_of(get(client, f"/studies/{BIG.uid}/instances?InstanceNumber=7"))
    assert [values(r, "00200013") for r in numbered] == [[7], [7]]
    pet = SOP_CLASSES["PT"]
    by_class = get(client, f"/studies/{BIG.uid}/instances?SOPClassUID={pet}&limit=1000")
    assert sorted(found(by_class, SOP_UID)) == sorted(BIG.series[1].instances)


def test_search_for_instances_all_by_uid(corpus) -> None:
    client, _ = corpus
    study = STUDIES[5]
    sop = study.series[1].instances[0]
    (result,) = json_of(get(client, f"/instances?SOPInstanceUID={sop}"))
    assert values(result, STUDY_UID) == [study.uid]
    assert values(result, "00100020") == [study.patient_id]
    assert values(result, "00080060") == [study.series[1].modality]
    assert values(result, "00201209") == [len(study.series[1].instances)]


def test_search_paging_stable_with_warning(corpus) -> None:
    client, _ = corpus
    expected = newest_first(STUDIES)
    total = len(expected) + len(ENCODINGS)
    seen: list[str] = []
    offset = 0
    while True:
        response = get(client, f"/studies?limit=5&offset={offset}")
        if response.status_code == 204:
            assert response.body == b""
            break
        page = found(response, STUDY_UID)
        if remaining := total - offset - len(page):
            assert response.headers["Warning"] == (
                f'299 {HOST} "There are {remaining} additional results that can be requested"'
            )
        else:
            assert "Warning" not in response.headers
        seen += page
        offset += len(page)
    assert len(seen) == len(set(seen)) == total
    assert [uid for uid in seen if uid.startswith(ROOT)] == expected
    assert get(client, f"/studies?offset={total + 10}").status_code == 204


def test_search_includefield_forms(corpus) -> None:
    client, _ = corpus
    for query in (
        "includefield=StudyDescription,00100030",
        "includefield=StudyDescription&includefield=PatientBirthDate",
        "&includefield=00081030&includefield=00100030",  # Weasis sends "?&"
    ):
        (result,) = json_of(get(client, f"/studies?PatientID=P003&StudyDate=-20231231&{query}"))
        assert values(result, "00081030") == ["Study of P003"]
        assert values(result, "00100030") == ["19700101"]
    (result,) = json_of(get(client, "/studies?PatientID=P003&StudyDate=-20231231&includefield=all"))
    assert values(result, "00080062")  # SOPClassesInStudy comes with includefield=all
    assert "00081030" in result


def test_search_includefield_outside_the_index(corpus) -> None:
    """Instances: read from the page's metadata documents; studies, series: a Warning."""
    client, _ = corpus
    series = BIG.series[0]
    path = f"/studies/{BIG.uid}/series/{series.uid}/instances?limit=3&offset=5"
    response = get(client, f"{path}&includefield=DeviceSerialNumber")
    results = json_of(response)
    assert [values(r, "00181000") for r in results] == [["SN-7"]] * 3
    assert all(list(r) == sorted(r) for r in results)
    assert "DeviceSerialNumber" not in response.headers["Warning"]
    for level in ("/studies?PatientID=P001", f"/studies/{BIG.uid}/series?"):
        response = get(client, f"{level}&includefield=00181000")
        assert "(0018,1000) DeviceSerialNumber were not returned" in response.headers["Warning"]
        assert all("00181000" not in r for r in json_of(response))


def test_search_instances_includefield_all_reads_metadata(corpus) -> None:
    """includefield=all at instance level: every attribute of each instance (PS3.18
    §10.6.3.3.3), not only those the index keeps; computed ones and the charset stay."""
    client, _ = corpus
    series = BIG.series[0]
    path = f"/studies/{BIG.uid}/series/{series.uid}/instances?limit=2&includefield=all"
    response = get(client, path)
    results = json_of(response)
    assert len(results) == 2
    for result in results:
        assert values(result, "00181000") == ["SN-7"]  # DeviceSerialNumber, metadata only
        assert values(result, "00280010") == [8]  # Rows
        assert values(result, "00080005") == ["ISO_IR 192"]
        assert values(result, "00081190")[0].endswith(values(result, "00080018")[0])
        assert list(result) == sorted(result)
    assert "were not returned" not in response.headers["Warning"]


def test_search_studies_includefield_of_a_lower_level_warns(corpus) -> None:
    """NumberOfSeriesRelatedInstances is a series attribute: a study search drops it, and says
    so instead of dropping it silently."""
    client, _ = corpus
    response = get(client, "/studies?PatientID=P001&includefield=NumberOfSeriesRelatedInstances")
    assert response.status_code == 200
    assert all("00201209" not in r for r in json_of(response))
    warning = response.headers["Warning"]
    assert "(0020,1209) NumberOfSeriesRelatedInstances were not returned" in warning
    assert "below the study" in warning


def test_search_warnings_and_errors(corpus) -> None:
    client, _ = corpus
    response = get(client, "/studies?PatientID=P001&foo=bar")
    assert response.status_code == 200
    assert "'foo'" in response.headers["Warning"]
    assert response.headers["Warning"].startswith(f"299 {HOST} ")
    for query, name in (
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("fuzzymatching=maybe", "fuzzymatching"),
        ("StudyDate=2024", "StudyDate"),
        ("StudyInstanceUID=1.2.*", "StudyInstanceUID"),
    ):
        response = get(client, f"/studies?{query}")
        assert response.status_code == 400, query
        assert name in json_of(response)["Message"]
    assert get(client, "/studies?PatientID=nobody").status_code == 204
    assert get(client, "/studies", accept="image/png").status_code == 406


def test_search_character_sets_unicode(corpus) -> None:
    client, _ = corpus
    for path in ENCODINGS:
        ds = dcmread(path)
        (result,) = json_of(get(client, f"/studies?PatientID={ds.PatientID}"))
        name = ds.PatientName
        wanted = {
            group: str(value)
            for group, value in (
                ("Alphabetic", name.alphabetic),
                ("Ideographic", name.ideographic),
                ("Phonetic", name.phonetic),
            )
            if value
        }
        assert values(result, "00100010") == [wanted], path.name
        assert values(result, "00080005") == ["ISO_IR 192"]
    ideographic = found(get(client, "/studies?PatientName=山田*"), "00100020")
    assert sorted(ideographic) == ["H31EXAMPLE", "H32EXAMPLE"]
    assert found(get(client, "/studies?PatientName=buc^jérôme"), "00100020") == ["SCSFREN"]
    greek = found(get(client, "/studies?PatientName=%CE%94%CE%B9%CE%BF*"), "00100020")
    assert greek == ["SCSGREEK"]


def test_search_xml_multipart(corpus) -> None:
    client, _ = corpus
    response = get(
        client, "/studies?PatientID=P002", accept='multipart/related; type="application/dicom+xml"'
    )
    assert response.status_code == 200
    parts = parts_of(response)
    assert len(parts) == 2
    for headers, body in parts:
        assert headers["content-type"] == "application/dicom+xml"
        root = ElementTree.fromstring(body)
        assert root.tag.endswith("NativeDicomModel")
    assert b"P002" in parts[0][1]


def test_search_accept_query_parameter_replaces_header(corpus) -> None:
    """PS3.18 §8.3.3.1: `accept=` wins over the Accept header, and is no unknown parameter."""
    client, _ = corpus
    xml = quote('multipart/related; type="application/dicom+xml"')
    response = get(client, f"/studies?PatientID=P002&accept={xml}")
    assert response.status_code == 200
    assert len(parts_of(response)) == 2
    assert "Warning" not in response.headers
    refused = get(client, "/studies?PatientID=P002&accept=image/png")
    assert refused.status_code == 406
    assert "QIDO-RS response" in json_of(refused)["Message"]


def _unindexed_study_search(ctx: Context) -> WebRequest:
    """A study search on StudyDescription only, which no index key narrows."""
    return WebRequest(
        method="GET",
        path="/dicom-web/studies",
        headers={"accept": "application/dicom+json"},
        query=[("StudyDescription", "*P00*")],
        body=b"",
        base_url=f"http://{HOST}",
        dicomweb_root=f"http://{HOST}/dicom-web",
        context=ctx,
    )


def test_search_over_budget_413_names_indexed_keys(corpus) -> None:
    _, ctx = corpus
    request = _unindexed_study_search(ctx)
    with pytest.raises(PayloadTooLarge) as raised:
        search(request, "study", budget=5)
    assert "PatientID" in raised.value.message and "StudyDate" in raised.value.message
    assert json.loads(search(request, "study", budget=100).body)  # under the budget: answered
    request.query = [("StudyDescription", "*P00*"), ("PatientID", "P001")]
    assert search(request, "study", budget=1).status == 200  # indexed: no budget


def test_search_budget_spent_after_a_whole_page_answers_the_page(corpus) -> None:
    """A page found within the scan budget is answered even when counting the matches after
    it would pass the budget; the Warning says the count is a lower bound."""
    _, ctx = corpus
    request = _unindexed_study_search(ctx)
    everything = json.loads(search(request, "study", budget=100).body)
    assert len(everything) >= 3
    request.query.append(("limit", "1"))
    response = search(request, "study", budget=2)
    assert response.status == 200
    assert json.loads(response.body) == everything[:1]
    assert "at least" in response.headers["Warning"] or "may be" in response.headers["Warning"]
    request.query[-1] = ("limit", str(len(everything)))
    with pytest.raises(PayloadTooLarge):  # the page itself passes the budget
        search(request, "study", budget=2)


def _fresh_context(corpus_ctx: Context, tmp_path: Path) -> Context:
    """An empty context on the corpus' backend (inside its moto, under other names)."""
    if corpus_ctx.settings.backend == "local":
        return make_context("local", tmp_path)
    import boto3

    from chalicelib.storage.dynamo import create_table

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="qido-fresh")
    create_table(boto3.client("dynamodb", region_name="us-east-1"), "qido-fresh")
    return build_context(Settings(backend="aws", bucket="qido-fresh", table="qido-fresh"))


def test_search_aggregates_exact_after_restore_and_delete(corpus, tmp_path: Path) -> None:
    ctx = _fresh_context(corpus[1], tmp_path)
    client = Client(create_app(lambda: ctx))
    study = STUDIES[4]
    for series in study.series:
        for number in range(1, len(series.instances) + 1):
            store_instance(ctx, instance_bytes(study, series, number))
    store_instance(ctx, instance_bytes(study, study.series[0], 1))  # a re-store
    (result,) = json_of(get(client, f"/studies?StudyInstanceUID={study.uid}"))
    assert values(result, "00201208") == [study.num_instances]
    removed = study.series[1]
    ctx.index.delete_series(study.uid, removed.uid)
    (result,) = json_of(get(client, f"/studies?StudyInstanceUID={study.uid}"))
    assert values(result, "00201206") == [1]
    assert values(result, "00201208") == [len(study.series[0].instances)]
    assert values(result, "00080061") == [study.series[0].modality]
    assert get(client, f"/studies/{study.uid}/series?Modality={removed.modality}").status_code == (
        204
    )


def test_qido_module_imports_no_pydicom() -> None:
    import subprocess
    import sys

    code = (
        "import sys, chalicelib.server.qido; "
        "print(sorted(m for m in ('pydicom', 'numpy', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ},
    )
    assert out.stdout.strip() == "[]"


def test_dicomweb_client_search_against_local_server(tmp_path: Path) -> None:
    """dicomweb-client's search calls against the real local server agree with the corpus."""
    from dicomweb_client.api import DICOMwebClient

    from tests.server.test_localserver import local_server

    ingest_corpus(make_context("local", tmp_path))
    with local_server(tmp_path / "data") as url:
        client = DICOMwebClient(url=f"{url}/dicom-web")
        p001 = client.search_for_studies(
            search_filters={"PatientID": "P001"}, fields=["StudyDescription"], get_remaining=True
        )
        assert [values(r, STUDY_UID)[0] for r in p001] == newest_first(STUDIES[:2])
        assert all(values(r, "00081030") == ["Study of P001"] for r in p001)
        fuzzy = client.search_for_studies(
            search_filters={"PatientName": "jurg"}, fuzzymatching=True
        )
        assert [values(r, "00100020")[0] for r in fuzzy] == ["P004", "P004"]
        everything = client.search_for_studies(limit=4, get_remaining=True)
        assert len(everything) == len(STUDIES) + len(ENCODINGS)
        mr = client.search_for_series(
            search_filters={"Modality": "MR"}, limit=3, get_remaining=True
        )
        assert sorted(values(r, SERIES_UID)[0] for r in mr) == sorted(
            se.uid for s in STUDIES for se in s.series if se.modality == "MR"
        )
        series = BIG.series[1]
        instances = client.search_for_instances(
            BIG.uid, series.uid, fields=["00080008"], limit=30, get_remaining=True
        )
        assert sorted(values(r, SOP_UID)[0] for r in instances) == sorted(series.instances)
        in_study = client.search_for_instances(
            study_instance_uid=BIG.uid, search_filters={"InstanceNumber": "7"}
        )
        assert sorted(values(r, SERIES_UID)[0] for r in in_study) == [se.uid for se in BIG.series]
