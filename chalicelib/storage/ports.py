"""The storage contract: the only thing `server/` and `client/` know about storage.

Every adapter (local: files + SQLite; AWS: S3 + DynamoDB) implements these protocols and
passes the same contract tests (`tests/storage/test_contract_*.py`).

Records carry the DICOM JSON model (PS3.18 Annex F) of the main attributes of each level, so
that QIDO-RS answers come from the index alone, and pointers (blob keys, versions) to what
lives in the BlobStore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, BinaryIO, Literal, Protocol

from chalicelib.dicom.matching import Narrowing
from chalicelib.dicom.tags import Level

DicomJson = dict[str, Any]
"""One dataset in the DICOM JSON model: {"0020000D": {"vr": "UI", "Value": [...]}, ...}."""


class StorageError(Exception):
    """Base of the errors that adapters translate their backend's errors into."""


class NotFound(StorageError):
    """The key, study, series or instance does not exist."""


class Conflict(StorageError):
    """The write contradicts what is stored (e.g. a SOP Instance UID under another study)."""


class OutOfResources(StorageError):
    """The backend refused for lack of space or capacity (maps to FailureReason 0xA7xx)."""


class BackendError(StorageError):
    """The backend failed otherwise (an SQLite or file system error, an AWS error other than
    throttling); the message names the backend and the operation, the cause is chained."""


class ScanBudgetExceeded(StorageError):
    """A search had no usable index hint and would read more than `budget` candidates."""

    def __init__(self, level: Level, budget: int) -> None:
        super().__init__(f"a {level} search without an indexed key read more than {budget} records")
        self.level = level
        self.budget = budget


@dataclass
class InstanceRecord:
    """What the index keeps of one stored instance (a few KB at most)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    """Key of the original bytes in the BlobStore (`ingest.blob_key`):
    `{study}/{series}/{sop}_{sha256[:16]}-{nonce}.dcm`, never reused."""
    size: int
    sha256: str
    study_tags: DicomJson
    """Patient and study level main attributes of this instance (the study record takes them)."""
    series_tags: DicomJson
    instance_tags: DicomJson
    orthanc_ids: dict[str, str]
    """{"patient": ..., "study": ..., "series": ..., "instance": ...}, see dicom/ids.py."""
    has_file_meta: bool = True
    metadata_key: str | None = None
    """Key of the precomputed WADO-RS metadata blob (gzip DICOM JSON) of this instance, when
    the index does not keep the document itself (`TagIndex.keeps_metadata`), or when it was
    stored before the index did."""
    metadata_size: int = 0
    pixel: dict[str, Any] = field(default_factory=dict)
    """Frame access facts recorded at ingest (offsets, fragment table): see dicom/parse.py.
    A large fragment table is a blob instead (`frames_key`, `frame_total`): thousands of
    frames would pass DynamoDB's 400 KB item limit."""
    bulk: dict[str, Any] = field(default_factory=dict)
    """Bulk element offsets recorded at ingest, keyed by tag path: see dicom/bulk.py."""
    stored_at: str = ""
    """ISO 8601 UTC time of the store, set by the adapter."""
    metadata: bytes | None = field(default=None, repr=False, compare=False)
    """At store time, the gzip metadata document for an index that keeps it
    (`TagIndex.keeps_metadata`): committed with the record, never part of its serialized form
    (`records.record_to_json`); None in the records an index answers (read the document with
    `TagIndex.metadata_documents`)."""

    def blob_keys(self) -> list[str]:
        """Every BlobStore key this record owns: original bytes, metadata, frame table."""
        keys = [self.blob_key, self.metadata_key, self.pixel.get("frames_key")]
        return [key for key in keys if key]


@dataclass(frozen=True)
class InstanceFile:
    """What a retrieve reads of a stored instance: where its bytes are and how they are
    encoded, without its tags (`TagIndex.list_instance_files`)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    has_file_meta: bool = True

    @classmethod
    def of(cls, record: InstanceRecord) -> InstanceFile:
        return cls(
            record.study_uid,
            record.series_uid,
            record.sop_uid,
            record.transfer_syntax_uid,
            record.blob_key,
            record.size,
            record.has_file_meta,
        )


@dataclass
class SeriesRecord:
    study_uid: str
    series_uid: str
    series_tags: DicomJson
    num_instances: int
    version: int
    """Bumped by every store, re-store with overwrite, and delete inside the series."""
    orthanc_id: str = ""


@dataclass
class StudyRecord:
    study_uid: str
    study_tags: DicomJson
    num_series: int
    num_instances: int
    modalities: list[str]
    """Sorted distinct Modality (0008,0060) values of the study's series."""
    sop_classes: list[str]
    """Sorted distinct SOP Class UIDs of the study's instances."""
    version: int
    orthanc_id: str = ""


@dataclass
class SearchInstance:
    """An instance as a search reads it: its UIDs at hand, its index record decoded on first
    use of `record` (by `load`), so that a search whose keys need no instance attribute
    decodes only the instances of the page it answers (Search Transaction, PS3.18 §10.6,
    2025b)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    load: Callable[[], InstanceRecord] = field(repr=False, compare=False)

    @cached_property
    def record(self) -> InstanceRecord:
        return self.load()


@dataclass
class SearchCandidate:
    """One candidate of a search: the study, and the series and instance at lower levels.

    The records are those of the index (the study's aggregates, the series' count), so that
    computed attributes come out exact.
    """

    study: StudyRecord
    series: SeriesRecord | None = None
    instance: SearchInstance | None = None


StoreOutcome = Literal["created", "kept", "replaced"]


@dataclass
class StoreResult:
    outcome: StoreOutcome
    record: InstanceRecord
    """The record the index points to after the call (the old one when `kept`)."""
    replaced_blob_keys: list[str] = field(default_factory=list)
    """Blob keys the index no longer points to; the caller deletes them after the commit."""


@dataclass(frozen=True)
class BlobWrite:
    """A write intent (`TagIndex.begin_blob_writes`): the blobs of one instance, recorded
    before they are written, so that a store stopped before its index commit (a killed
    process, a Lambda's timeout) leaves blobs that can be found."""

    study_uid: str
    series_uid: str
    sop_uid: str
    keys: tuple[str, ...]
    """The record's `blob_keys()`; the first, its `blob_key`, names the intent."""
    at: str
    """ISO 8601 UTC time of the intent, to the microsecond (`records.utc_stamp`)."""

    @property
    def blob_key(self) -> str:
        return self.keys[0]


@dataclass
class DeleteResult:
    instances: list[InstanceRecord]
    """The records removed; the caller deletes their blobs and derived documents."""


class BlobStore(Protocol):
    """Immutable-by-convention object storage (S3, a folder)."""

    def put(
        self, key: str, data: bytes | memoryview, content_type: str = "application/octet-stream"
    ) -> None:
        """Write `data` at `key` (callers never reuse a key for different bytes); a view (a
        part of a STOW-RS body) is written without a copy where the backend can."""

    def get(self, key: str) -> bytes:
        """Read the whole object; raise NotFound."""

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Read `length` bytes from `start` (clamped at the end); raise NotFound."""

    def open(self, key: str, start: int = 0) -> BinaryIO:
        """The object from byte `start` on as a readable binary file, to read in blocks (a
        streamed answer); the caller closes it. On a folder it is the file itself (so that it
        can be sent with `sendfile`), on S3 the body of a GET. Raise NotFound."""

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    def delete_many(self, keys: Sequence[str]) -> dict[str, str]:
        """Remove the objects at `keys` (a missing key is not an error); the keys that could
        not be removed, each with the reason (nothing is raised for them: a caller keeps
        those pending and removes the rest). Raise ValueError for an invalid key before
        removing any."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object whose key starts with `prefix` (a folder: ends with '/'); a
        missing folder is not an error. Raise BackendError naming the objects that could not
        be removed, after removing the others (a caller keeps the folder pending)."""

    def exists(self, key: str) -> bool: ...

    def presigned_url(self, key: str, expires_in: int = 3600) -> str | None:
        """A URL a client can GET without credentials, or None where the store has none."""

    def presigned_upload_url(
        self, key: str, content_type: str, expires_in: int = 3600
    ) -> str | None:
        """A URL a client can PUT `key` to (with that Content-Type) without credentials, or
        None where the store has none."""


class TagIndex(Protocol):
    """The index of stored instances, series and studies."""

    keeps_metadata: bool
    """Whether the index keeps each instance's precomputed metadata document itself, committed
    with its record (`InstanceRecord.metadata`; SQLite: one file per instance, and nothing to
    orphan), or the caller writes it as a blob at `metadata_key` (DynamoDB: an item stops at
    400 KB)."""

    def store_instance(self, record: InstanceRecord, overwrite: bool) -> StoreResult:
        """Commit an instance and update its series and study records in one step.

        A crash never leaves a half-stored instance visible. Re-storing a SOP Instance UID
        under the same study and series changes no count: with `overwrite` False the stored
        record is kept (`kept`), with True it is replaced (`replaced`, the old blob key in
        `replaced_blob_keys` when it differs). Raise Conflict when the SOP Instance UID is
        already stored under another study or series.
        """

    def store_instances(
        self, records: Sequence[InstanceRecord], overwrite: bool
    ) -> list[StoreResult | Exception]:
        """Commit several instances, each as `store_instance` does; the answer has one item
        per record, in order: its StoreResult, or the error that refused it (Conflict, ...)
        while the others are stored. Raise only when none of them was committed.

        SQLite commits them in one transaction; DynamoDB the new instances of a study in one
        transaction per up to ~42 (TransactWriteItems' 100 actions: two per instance, one per
        series, the study's and its search entries'), each series and the study updated once
        in it; an instance stored before, or one a concurrent writer got to first, in a
        transaction of its own.

        The write intents (`begin_blob_writes`) of the records it commits (created or
        replaced) end: SQLite in the same transaction, DynamoDB after it (an intent a crash
        leaves is then one whose blobs the index points to, which `stale_blob_writes` tells).
        """

    def metadata_documents(self, sop_uids: Sequence[str]) -> dict[str, bytes]:
        """The gzip metadata documents the index keeps of these instances, by SOP Instance
        UID, in one read; an instance without one here (its document is a blob at
        `metadata_key`, it is deleted, the index keeps none) is left out."""

    def get_instance(self, study_uid: str, series_uid: str | None, sop_uid: str) -> InstanceRecord:
        """Raise NotFound, also when the instance is under another study or series."""

    def find_instance(self, sop_uid: str) -> InstanceRecord:
        """Look an instance up by SOP Instance UID alone (WADO-URI); raise NotFound."""

    def get_series(self, study_uid: str, series_uid: str) -> SeriesRecord:
        """Raise NotFound, also when the series is under another study."""

    def get_study(self, study_uid: str) -> StudyRecord:
        """Raise NotFound."""

    def list_series(self, study_uid: str) -> list[SeriesRecord]:
        """The series of a study; empty when the study is unknown."""

    def list_instances(self, study_uid: str, series_uid: str | None = None) -> list[InstanceRecord]:
        """The instances of a study or of one of its series, from one indexed read."""

    def list_instance_files(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[InstanceFile]:
        """The files of a study, of one of its series, or of one instance (`sop_uid`), in
        `list_instances` order, read without decoding the records' tags: what a WADO-RS
        retrieve needs (Retrieve Transaction, PS3.18 §10.4, 2025b). Empty when there is
        none, also when the instance is under another study or series."""

    def iter_studies(self) -> Iterator[StudyRecord]:
        """Every study, in a stable order (used by bounded listings and tests)."""

    def search(
        self, level: Level, hints: Sequence[Narrowing], budget: int | None
    ) -> Iterator[SearchCandidate]:
        """Candidates of a QIDO-RS search at `level`: a superset of the resources that satisfy
        every hint (see `dicom.matching.narrowing`); the caller decides with
        `dicom.matching.matches`. Search Transaction, PS3.18 §10.6 (2025b).

        Every adapter answers through `storage.search.run_search` over its own reads: it
        narrows with the first hint there is an index for (a UID of the level or above,
        PatientID, AccessionNumber, PatientName, StudyDate, Modality, ModalitiesInStudy) and
        ignores the others. Without one it lists the whole level, and raises
        ScanBudgetExceeded once it has read more than `budget` records (None: no limit, for
        listings that ask for everything).

        An instance candidate's record is decoded only when its `record` is read, and is then
        the record `get_instance` returns.

        Order, the same on every adapter and stable between calls: studies by StudyDate
        (normalized YYYYMMDD, absent last) then StudyInstanceUID, both descending; series and
        instances by (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID), ascending.
        """

    def delete_study(self, study_uid: str) -> DeleteResult:
        """Raise NotFound."""

    def delete_series(self, study_uid: str, series_uid: str) -> DeleteResult:
        """Raise NotFound; removes the study record when it was its last series."""

    def delete_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> DeleteResult:
        """Raise NotFound; removes emptied series and study records; keeps aggregates exact."""

    def pending_blob_deletes(self) -> list[str]:
        """Blob keys (`InstanceRecord.blob_keys`) of deleted instances, recorded in the index
        delete's own commit, and the entries of `add_pending_deletes`, not yet confirmed
        removed by `blobs_deleted`: what a crash between an index delete and its blob removal
        left."""

    def blobs_deleted(self, keys: Sequence[str]) -> None:
        """The blobs at `keys` are removed: forget their pending delete."""

    def add_pending_deletes(self, keys: Sequence[str]) -> None:
        """Record blob keys to remove, or folders (a key ending with '/': every blob under
        it), as pending deletes that `pending_blob_deletes` lists until `blobs_deleted`: the
        documents derived from a resource (cached metadata, thumbnails), which a DELETE
        records before its index delete (removing a cache entry loses nothing)."""

    def begin_blob_writes(self, records: Sequence[InstanceRecord]) -> None:
        """Record a write intent (`BlobWrite`, stamped now) for each record, before its blobs
        are written. `store_instances` ends those of the records it commits; what a store
        interrupted before its commit leaves is found by `stale_blob_writes`."""

    def stale_blob_writes(self, before: str) -> list[BlobWrite]:
        """The write intents recorded before `before` (ISO 8601 UTC, `records.utc_stamp`),
        oldest first."""

    def end_blob_writes(self, blob_keys: Sequence[str]) -> None:
        """Forget the write intents named by these blob keys (missing ones are no error)."""


class ConfigStore(Protocol):
    """Small named JSON documents: remote DICOMweb servers (`ServersInDatabase`), settings."""

    def put_item(self, namespace: str, name: str, value: dict[str, Any]) -> None: ...

    def get_item(self, namespace: str, name: str) -> dict[str, Any]:
        """Raise NotFound."""

    def list_items(self, namespace: str) -> dict[str, dict[str, Any]]: ...

    def delete_item(self, namespace: str, name: str) -> None:
        """Raise NotFound."""


class SecretStore(Protocol):
    """Secrets kept apart from the ConfigStore, which holds only the reference `put_secret`
    returns (remote servers' passwords, key passwords, header values)."""

    def put_secret(self, name: str, value: dict[str, Any]) -> str:
        """Create or replace the secret `name`; return its reference."""

    def get_secret(self, reference: str) -> dict[str, Any]:
        """Raise NotFound."""

    def delete_secret(self, name: str) -> None:
        """Delete the secret `name` if there is one."""


JobState = Literal["Pending", "Running", "Paused", "Success", "Failure"]


@dataclass
class JobRecord:
    """One client job (a STOW to or a retrieve from a remote server): what it was asked, how
    far it got (`cursor`), and what it reports (`content`, `progress`, the error). See
    chalicelib/jobs.py for what the fields mean to each job type."""

    id: str
    type: str
    state: JobState
    priority: int
    server: str
    params: dict[str, Any]
    """The request, resolved: resources as UIDs, HttpHeaders, Arguments."""
    cursor: dict[str, Any]
    content: dict[str, Any]
    progress: int = 0
    creation_time: str = ""
    completion_time: str = ""
    runtime: float = 0.0
    """Seconds spent in steps (Orthanc's EffectiveRuntime)."""
    error_code: int = 0
    error_description: str = "Success"
    execution: str = ""
    """The runner's handle of the running job (the Step Functions execution ARN on AWS)."""
    execution_steps: int = 0
    """Steps run since the runner last started it: on AWS, after `JobsStepsPerExecution` of
    them the worker starts a fresh execution (`jobs.handle_worker_event`)."""
    version: int = 0
    """Bumped by every save; a save from a stale copy raises Conflict."""


class JobStore(Protocol):
    """The job records, one document each; writes are conditional on `version`."""

    def create(self, job: JobRecord) -> None:
        """Store a new job (version 0); raise Conflict when its id exists."""

    def get(self, job_id: str) -> JobRecord:
        """Raise NotFound."""

    def list(self) -> list[JobRecord]:
        """Every job, oldest first (by creation time, then id)."""

    def save(self, job: JobRecord) -> JobRecord:
        """Replace the job if the stored version is still `job.version`; return it with the
        version bumped; raise Conflict when someone saved it meanwhile, NotFound when gone."""

    def delete(self, job: JobRecord) -> None:
        """Remove the job if the stored version is still `job.version`; raise Conflict when
        someone saved it meanwhile, NotFound when gone."""


class JobRunner(Protocol):
    """Runs jobs step by step somewhere (threads locally, Step Functions on AWS). A runner
    holds no job logic: it calls `chalicelib.jobs` to advance a job, which reads the state."""

    def start(self, job: JobRecord) -> str:
        """Schedule the job's next steps; return the runner's handle of it (or ""). A runner
        may start it where its current `execution` runs (Step Functions: that execution's
        state machine, where none is configured, as on the jobs worker)."""

    def stop(self, job: JobRecord) -> None:
        """Stop running the job (its state already says Paused or Failure)."""

    def is_running(self, job: JobRecord) -> bool:
        """Whether this runner is running the job or has it queued now."""
