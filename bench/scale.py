"""Cost flat in archive size (issue 14): the same requests on 1,000 to 100,000 studies.

    .venv/bin/python -m bench.scale                          # make bench-scale
    .venv/bin/python -m bench.scale --sizes 1000,10000 --backends local

For each backend (`local`: files + SQLite; `moto`: the DynamoDB and S3 adapters on moto, in
process) the archive grows through the sizes (the studies of a smaller size stay in the larger
one), and after each step the same requests go through the app (Chalice's test client), timed,
with what they read from the index counted by the wrappers of `bench/counting.py`. See
bench/README.md ("Scale") for the data, the rows and the JSON schema.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.counting import CountingDynamoClient, CountingSqlite
from bench.run import percentile

BENCH_DIR = Path(__file__).resolve().parent
REGION = "us-east-1"
BUCKET = "dicomweb-scale"
TABLE = "dicomweb-scale"
SURNAMES = (
    "DOE", "MARTIN", "GARCIA", "MULLER", "ROSSI", "TANAKA", "NOVAK", "DUBOIS", "SILVA", "KOWALSKI",
    "SMITH", "JENSEN", "IVANOV", "NGUYEN", "KIM", "COHEN", "OBI", "LARSEN", "MORI", "PEREZ",
)  # fmt: skip
"""One surname in twenty starts with SMI: `PatientName=SMI*` matches 5% of the studies."""
GIVEN_NAMES = ("ANNA", "JOHN", "MARIA", "LUCAS", "EMMA", "NOAH", "SARA")
FIRST_DATE = datetime.date(2000, 1, 1)
DATE_SPAN_DAYS = 20 * 365
DATE_RANGE = "20100101-20101231"
"""One year of the twenty the study dates spread over: about 5% of the studies."""
MODALITIES = (("CT", "1.2.840.10008.5.1.4.1.1.2"), ("MR", "1.2.840.10008.5.1.4.1.1.4"))
ACCEPT = "application/dicom+json"


@dataclass(frozen=True)
class StudySpec:
    """Study `n` of the synthetic archive: one patient, one series, `instances` instances."""

    n: int
    instances: int
    seed: int

    def uid(self, *parts: int) -> str:
        digest = hashlib.sha256(f"{self.seed}/{self.n}/{parts}".encode()).hexdigest()
        return "2.25." + str(int(digest[:30], 16))

    @property
    def study_uid(self) -> str:
        return self.uid()

    @property
    def series_uid(self) -> str:
        return self.uid(1)

    @property
    def study_date(self) -> str:
        day = FIRST_DATE + datetime.timedelta(days=(self.n * 7919) % DATE_SPAN_DAYS)
        return day.strftime("%Y%m%d")


def instance_bytes(spec: StudySpec, number: int) -> bytes:
    """A small Part-10 instance of the study (no pixel data), as a modality would send it."""
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    modality, sop_class = MODALITIES[spec.n % len(MODALITIES)]
    sop_uid = spec.uid(1, number)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = f"{SURNAMES[spec.n % len(SURNAMES)]}^{GIVEN_NAMES[spec.n % len(GIVEN_NAMES)]}"
    ds.PatientID = f"P{spec.n:07d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "FO"[spec.n % 2]
    ds.StudyInstanceUID = spec.study_uid
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500"
    ds.StudyID = str(spec.n)
    ds.AccessionNumber = f"A{spec.n:07d}"
    ds.ReferringPhysicianName = "REF^ERRING"
    ds.StudyDescription = f"Scale study {spec.n}"
    ds.SeriesInstanceUID = spec.series_uid
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Synthetic series"
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = 512
    ds.SliceThickness = "1.0"
    ds.ImagePositionPatient = [0, 0, number]
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


class RecordCollector:
    """A TagIndex that only keeps what ingest hands it: the records of the STOW path, for a
    loader that writes them to the index its own way. It keeps metadata documents as that
    index does (`keeps_metadata`), so that ingest makes the records it would."""

    def __init__(self, keeps_metadata: bool) -> None:
        self.keeps_metadata = keeps_metadata
        self.records: list[Any] = []

    def store_instances(self, records: list[Any], overwrite: bool) -> list[Any]:
        from chalicelib.storage.ports import StoreResult

        self.records += records
        return [StoreResult("created", record) for record in records]

    def begin_blob_writes(self, records: list[Any]) -> None:
        """No write intents: the loader writes the records, and no store is interrupted."""

    def end_blob_writes(self, blob_keys: list[str]) -> None:
        """No write intents to end."""


class ProbedBlobs:
    """The blob store of the context, kept to the probed studies: the rows read blobs of those
    only, and writing 100,000 others to S3 on moto would take most of the run."""

    def __init__(self, blobs: Any, study_uids: set[str]) -> None:
        self._blobs = blobs
        self._studies = study_uids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blobs, name)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if key.split("/", 1)[0] in self._studies:
            self._blobs.put(key, data, content_type)


def ingest_records(ctx: Any, specs: list[StudySpec], probed: set[str]) -> list[Any]:
    """The instance records STOW-RS makes of these studies (`ingest.store_instance`, all its
    checks), the probed studies' blobs stored; nothing is written to the index."""
    from chalicelib import ingest

    collector = RecordCollector(ctx.index.keeps_metadata)
    loading = dataclasses.replace(ctx, index=collector, blobs=ProbedBlobs(ctx.blobs, probed))
    for spec in specs:
        for number in range(1, spec.instances + 1):
            result = ingest.store_instance(loading, instance_bytes(spec, number))
            if result.status != "stored":
                raise RuntimeError(f"study {spec.n}: {result.message}")
    return collector.records


# --- DynamoDB: the items a store leaves, written in batches ---------------------------------


def dynamo_items(records: list[Any]) -> list[dict[str, Any]]:
    """The items `DynamoTagIndex.store_instance` leaves after storing `records`, the
    instances of one new series of one new study, one after the other (checked against the
    adapter itself by `check_dynamo_items`)."""
    from chalicelib.storage.dynamo import items as dynamo
    from chalicelib.storage.dynamo.table import (
        SERIES_INDEX,
        STUDY_SK,
        Table,
        number,
        string,
        string_set,
    )
    from chalicelib.storage.records import first_version, modality, stamped

    records = [stamped(record) for record in records]
    last, count = records[-1], len(records)
    version = first_version() + count - 1
    items = []
    for record in records:
        items += [dynamo.instance_item(record), dynamo.sop_pointer(record)]
    series = {
        **Table.key(last.study_uid, f"SE#{last.series_uid}"),
        SERIES_INDEX: string(last.series_uid),
        "num_instances": number(count),
        "version": number(version),
        **dynamo.series_values(last),
    }
    terms = dynamo.study_terms(last.study_uid, last.study_tags)
    study = {
        **Table.key(last.study_uid, STUDY_SK),
        **dynamo.study_values(last),
        "ix": string(json.dumps(terms, sort_keys=True)),
        **dynamo.study_additions(last, count, 1),
        "modalities": string_set({modality(r) for r in records}),
        "sop_classes": string_set({r.sop_class_uid for r in records}),
        "version": number(version),
    }
    items += [series, study]
    table = Table(None, TABLE)
    items += [op["Item"] for _, op in dynamo.term_actions(table, last.study_uid, None, terms)]
    return [{k: v for k, v in item.items() if v is not None} for item in items]


def _comparable(item: dict[str, Any]) -> dict[str, Any]:
    """An item without what depends on the time of the store (versions, stored_at)."""
    item = {k: v for k, v in item.items() if k != "version"}
    if "record" in item:
        record = json.loads(item["record"]["S"])
        record["stored_at"] = ""
        item["record"] = {"S": json.dumps(record, sort_keys=True)}
    return item


def check_dynamo_items(client: Any, records: list[Any]) -> None:
    """Store `records` (one new study) through `DynamoTagIndex.store_instance` and fail unless
    its items are those `dynamo_items` builds: the fast load writes what STOW writes."""
    from chalicelib.storage.dynamo import DynamoTagIndex

    index = DynamoTagIndex(client, TABLE)
    for record in records:
        index.store_instance(record, False)
    stored = [
        item
        for page in client.get_paginator("query").paginate(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": records[0].study_uid}},
        )
        for item in page["Items"]
    ]
    stored += [
        client.get_item(TableName=TABLE, Key={"pk": {"S": f"SOP#{r.sop_uid}"}, "sk": {"S": "SOP"}})[
            "Item"
        ]
        for r in records
    ]
    built = dynamo_items(records)

    def key(item: dict[str, Any]) -> tuple[str, str]:
        return item["pk"]["S"], item["sk"]["S"]

    expected = sorted(map(_comparable, built), key=key)
    if sorted(map(_comparable, stored), key=key) != expected:
        raise RuntimeError(
            "bench.scale.dynamo_items no longer builds what DynamoTagIndex.store_instance "
            "stores: update it to the adapter"
        )


def write_dynamo(client: Any, items: list[dict[str, Any]], table: str = TABLE) -> None:
    """BatchWriteItem, 25 items a call, unprocessed items sent again."""
    for start in range(0, len(items), 25):
        request = {table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems")


# --- Backends --------------------------------------------------------------------------------


@dataclass
class Backend:
    """A context on one backend, a loader that grows its archive, and the counter of reads."""

    name: str
    context: Any
    load: Callable[[list[StudySpec], set[str]], None]
    reset: Callable[[], dict[str, Any]]
    note: str


@contextlib.contextmanager
def local_backend(work_dir: Path) -> Iterator[Backend]:
    from chalicelib.config import Settings
    from chalicelib.context import build_context
    from chalicelib.storage.local import SqliteTagIndex

    ctx = build_context(Settings(backend="local", data_dir=work_dir / "local"))
    index = ctx.index
    assert isinstance(index, SqliteTagIndex)
    counting = CountingSqlite(index._db._db)
    index._db._db = counting  # the adapter's connection, counted

    def load(specs: list[StudySpec], probed: set[str]) -> None:
        for record in ingest_records(ctx, specs, probed):
            index.store_instance(record, ctx.settings.overwrite_instances)

    yield Backend(
        "local",
        ctx,
        load,
        lambda: counting.reset().as_dict(),
        "SqliteTagIndex.store_instance per instance; reads: rows SELECTs returned and SQLite "
        "VM steps (hundreds)",
    )
    index.close()


@contextlib.contextmanager
def moto_backend() -> Iterator[Backend]:
    from moto import mock_aws

    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    cleared = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL")
    saved = {name: os.environ.get(name) for name in (*names, *cleared)}
    os.environ.update(dict(zip(names, ("scale", "scale", REGION), strict=True)))
    for name in cleared:
        os.environ.pop(name, None)  # nothing reaches AWS: moto answers in process
    try:
        with mock_aws():
            yield _moto_backend()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _moto_backend() -> Backend:
    import boto3

    from chalicelib.config import Settings
    from chalicelib.context import build_context
    from chalicelib.storage.dynamo import DynamoTagIndex, create_table

    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    create_table(dynamodb, TABLE)
    ctx = build_context(Settings(backend="aws", bucket=BUCKET, table=TABLE))
    counting = CountingDynamoClient(dynamodb)
    ctx.index = DynamoTagIndex(counting, TABLE)
    checked = False

    def load(specs: list[StudySpec], probed: set[str]) -> None:
        nonlocal checked
        records = ingest_records(ctx, specs, probed)
        by_study: dict[str, list[Any]] = {}
        for record in records:
            by_study.setdefault(record.study_uid, []).append(record)
        studies = list(by_study.values())
        if not checked:
            check_dynamo_items(dynamodb, studies.pop(0))
            checked = True
        write_dynamo(dynamodb, [item for study in studies for item in dynamo_items(study)])

    return Backend(
        "moto",
        ctx,
        load,
        lambda: counting.reset().as_dict(),
        "items built as DynamoTagIndex.store_instance leaves them (checked on the first "
        "study), written with BatchWriteItem (moto copies the table in every transaction); "
        "reads: items read (ScannedCount, items got), moto's ConsumedCapacity (a flat figure "
        "per call) and an estimate of the RCUs DynamoDB would bill from the items' sizes",
    )


# --- Measuring -------------------------------------------------------------------------------


def rows(probe: StudySpec) -> list[tuple[str, str]]:
    """(id, path) of the requests measured at every size."""
    study, series = probe.study_uid, probe.series_uid
    return [
        ("studies", "/studies?limit=10"),
        ("studies_patient_name", "/studies?PatientName=SMI*&limit=10"),
        ("studies_study_date", f"/studies?StudyDate={DATE_RANGE}&limit=10"),
        ("studies_patient_id", f"/studies?PatientID=P{probe.n:07d}&limit=10"),
        ("studies_accession_number", f"/studies?AccessionNumber=A{probe.n:07d}&limit=10"),
        ("studies_modalities", "/studies?ModalitiesInStudy=CT&limit=10"),
        ("series_of_study", f"/studies/{study}/series"),
        ("series_metadata", f"/studies/{study}/series/{series}/metadata"),
    ]


def measure(backend: Backend, path: str, repeats: int, warmup: int) -> dict[str, Any]:
    """Median latency of `path` through the app (wall clock, and CPU time of the process:
    steadier on a shared machine), and what one request reads from the index."""
    from chalice.test import Client

    from chalicelib.server.api import create_app

    client = Client(create_app(lambda: backend.context))
    headers = {"Accept": ACCEPT, "Host": "scale.bench"}
    seconds: list[float] = []
    cpu: list[float] = []
    reads: list[dict[str, Any]] = []
    response = None
    for attempt in range(warmup + repeats):
        backend.reset()
        started, cpu_started = time.perf_counter(), time.process_time()
        response = client.http.get(f"/dicom-web{path}", headers=headers)
        elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
        read = backend.reset()
        if attempt >= warmup:
            seconds.append(elapsed)
            cpu.append(cpu_elapsed)
            reads.append(read)
    assert response is not None
    body = json.loads(response.body) if response.body else []
    return {
        "status": response.status_code,
        "results": len(body),
        "warning": response.headers.get("Warning", ""),
        "median_ms": statistics.median(seconds) * 1000,
        "p95_ms": percentile(seconds, 0.95) * 1000,
        "min_ms": min(seconds) * 1000,
        "cpu_median_ms": statistics.median(cpu) * 1000,
        "samples": len(seconds),
        "reads": reads[-1],
        "reads_vary": any(r != reads[-1] for r in reads),
    }


def items_of(reads: dict[str, Any]) -> int:
    """The headline count of what a request read: rows on SQLite, items on DynamoDB."""
    return reads.get("items_read", reads.get("rows", 0))


def run_backend(
    backend: Backend, sizes: list[int], args: argparse.Namespace, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    probe = StudySpec(0, args.instances_per_study, args.seed)
    probed = {probe.study_uid}
    loaded, runs = 0, []
    for size in sizes:
        specs = [StudySpec(n, args.instances_per_study, args.seed) for n in range(loaded, size)]
        log(f"{backend.name}: loading studies {loaded}..{size - 1}")
        started = time.perf_counter()
        backend.load(specs, probed)
        load_s = time.perf_counter() - started
        loaded = size
        log(f"{backend.name}: {size} studies ({load_s:.1f} s to load {len(specs)})")
        requests = []
        for row_id, path in rows(probe):
            result = measure(backend, path, args.repeats, args.warmup)
            log(
                f"  {row_id}: {result['status']} {result['median_ms']:.1f} ms, "
                f"{items_of(result['reads'])} read"
            )
            requests.append({"id": row_id, "path": path, **result})
        runs.append(
            {
                "backend": backend.name,
                "studies": size,
                "instances": size * args.instances_per_study,
                "load_s": load_s,
                "load_studies": len(specs),
                "load_note": backend.note,
                "requests": requests,
            }
        )
    return runs


def growth(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend and request, largest size over smallest: latency and items read."""
    result = []
    for backend in dict.fromkeys(run["backend"] for run in runs):
        mine = sorted((r for r in runs if r["backend"] == backend), key=lambda r: r["studies"])
        if len(mine) < 2:
            continue
        first, last = mine[0], mine[-1]
        for a, b in zip(first["requests"], last["requests"], strict=True):
            items_a, items_b = items_of(a["reads"]), items_of(b["reads"])
            result.append(
                {
                    "backend": backend,
                    "id": a["id"],
                    "from_studies": first["studies"],
                    "to_studies": last["studies"],
                    "latency_ratio": b["median_ms"] / a["median_ms"],
                    "cpu_ratio": b["cpu_median_ms"] / a["cpu_median_ms"],
                    "items_ratio": items_b / items_a if items_a else None,
                    "flat": b["median_ms"] <= 1.5 * a["median_ms"] and items_b <= items_a,
                }
            )
    return result


def markdown(result: dict[str, Any]) -> str:
    """One table: a row per backend and request, a column per size (median ms · items read)."""
    runs = result["runs"]
    sizes = sorted({run["studies"] for run in runs})
    lines = [
        "| backend | request | "
        + " | ".join(f"{size:,} studies: ms · read" for size in sizes)
        + " | latency × | read × |",
        "|---|---|" + "---|" * (len(sizes) + 2),
    ]
    ratios = {(g["backend"], g["id"]): g for g in result["growth"]}
    for backend in dict.fromkeys(run["backend"] for run in runs):
        by_size = {run["studies"]: run for run in runs if run["backend"] == backend}
        first = next(iter(by_size.values()))
        for index, request in enumerate(first["requests"]):
            cells = []
            for size in sizes:
                run = by_size.get(size)
                if run is None:
                    cells.append("—")
                    continue
                measured = run["requests"][index]
                cells.append(f"{measured['median_ms']:.1f} · {items_of(measured['reads']):,}")
            ratio = ratios.get((backend, request["id"]))
            latency = f"{ratio['latency_ratio']:.2f}" if ratio else "—"
            items = (
                f"{ratio['items_ratio']:.2f}" if ratio and ratio["items_ratio"] is not None else "—"
            )
            lines.append(
                f"| {backend} | `{request['id']}` | {' | '.join(cells)} | {latency} | {items} |"
            )
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes are positive numbers of studies, e.g. 1000,10000")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[1000, 10_000, 100_000])
    parser.add_argument(
        "--moto-sizes",
        type=_sizes,
        default=[1000, 10_000],
        help="sizes on moto (moto reads its whole table for every Query: see bench/README.md)",
    )
    parser.add_argument("--backends", default="local,moto")
    parser.add_argument("--instances-per-study", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = set(args.backends) - {"local", "moto"}
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}; use local, moto")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = args.out or BENCH_DIR / "results" / f"scale-{stamp}.json"

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    clock = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
        for name in args.backends:
            sizes = args.sizes if name == "local" else args.moto_sizes
            factory = local_backend(Path(work)) if name == "local" else moto_backend()
            with factory as backend:
                runs += run_backend(backend, sizes, args, log)
    result = {
        "started_utc": started.isoformat(),
        "duration_s": time.perf_counter() - clock,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "settings": {
            "sizes": args.sizes,
            "moto_sizes": args.moto_sizes,
            "backends": args.backends,
            "instances_per_study": args.instances_per_study,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
        },
        "runs": runs,
    }
    result["growth"] = growth(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    log(f"result: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
