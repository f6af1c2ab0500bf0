"""The DICOMweb client API of the Orthanc plugin: remote servers, proxy calls, STOW and
retrieve jobs ("REST API of the Orthanc DICOMweb client" in its manual).

Every route is `admin`: it reaches other servers or changes the list of them. No route ever
answers a secret: servers are shown through `registry.public_view`. Asynchronous calls answer
`{ID, Path}` where Path is Orthanc's relative `.././../jobs/{id}`, which resolves from
`{root}/servers/{name}/stow` to `{root}/jobs/{id}`, where `server/jobs.py` serves jobs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chalicelib import jobs
from chalicelib.client import proxy
from chalicelib.client.http import READ_SIZE, RemoteError, remote_url
from chalicelib.client.registry import public_view
from chalicelib.client.resources import limit_job_resources, resolve_resources, uid_path
from chalicelib.errors import BadGateway, BadRequest, DicomWebError, PayloadTooLarge
from chalicelib.server.delivery import StreamedBody, deliver
from chalicelib.server.http import Service, WebRequest, WebResponse, json_response, warning_header
from chalicelib.storage.ports import JobRecord

if TYPE_CHECKING:
    from requests import Response

    from chalicelib.client.session import RemoteClient

service = Service("servers")

MAX_JOB_REQUEST_BYTES = 256 * 1024
"""What the request of a job may take as JSON (its Uri, Arguments, HttpHeaders and
Resources, kept in the job's parameters and Content): on AWS the job record is one DynamoDB
item (400 KB), which also holds a retrieve's list of stored instances; a 500 KB Uri made the
call a 500. `client.resources.MAX_JOB_RESOURCES` of the longest UIDs fit."""


def _body(request: WebRequest) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false, not {value!r}")
    return value


def _priority(body: dict[str, Any]) -> int:
    value = body.get("Priority", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"Priority must be an integer, not {value!r}")
    return value


@service.route("/servers", "GET", scope="admin")
def list_servers(request: WebRequest) -> WebResponse:
    servers = request.context.servers.servers()
    if request.query_values("expand"):
        return json_response({name: public_view(s) for name, s in servers.items()})
    return json_response(list(servers))


@service.route("/servers/{name}", "GET", scope="admin")
def server_operations(request: WebRequest, name: str) -> WebResponse:
    return json_response(request.context.servers.get(name).operations())


@service.route("/servers/{name}", "PUT", scope="admin")
def put_server(request: WebRequest, name: str) -> WebResponse:
    try:
        body = json.loads(request.body or b"null")
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    request.context.servers.put(name, body)
    return json_response({})


@service.route("/servers/{name}", "DELETE", scope="admin")
def delete_server(request: WebRequest, name: str) -> WebResponse:
    request.context.servers.delete(name)
    return json_response({})


def _client(request: WebRequest, name: str) -> Any:
    from chalicelib.client.session import remote_client  # requests: not at cold start

    return remote_client(request.context.servers.get(name), request.context.settings)


def _remote_failed(exc: RemoteError) -> DicomWebError:
    return BadGateway(exc.message)


class RemoteAnswer(StreamedBody):
    """A remote's answer body as it arrives, for a transport that writes it piece by piece
    (the local server): memory holds a read, not the answer (a remote's series)."""

    def __init__(self, request: WebRequest, client: RemoteClient, response: Response) -> None:
        self.blobs = request.context.blobs
        self.length = None  # sent chunked: a remote's Content-Length is of encoded bytes
        self.client = client
        self.response = response

    def pieces(self) -> Iterator[bytes]:
        with self.response:
            yield from self.client.chunks(self.response, READ_SIZE)

    def to_bytes(self) -> bytes:
        with self.response:
            return b"".join(self.client.chunks(self.response, READ_SIZE))


@service.route("/servers/{name}/get", "POST", scope="admin")
def proxy_get(request: WebRequest, name: str) -> WebResponse:
    """The remote's answer as it is: status, body and Content-Type, in a CSP sandbox: a
    remote's text/html or SVG shown by a browser must not run scripts in this origin. Locally
    it is passed on as it arrives (`RemoteAnswer`). Over `InlineLimit` on AWS it is a 303 to a
    copy in S3, as our own retrieves are: a remote's series (WADO-RS) is larger than a Lambda
    answer (6 MB), which API Gateway made a 502."""
    client, body = _client(request, name), _body(request)
    try:
        response = client.request(
            "GET",
            remote_url(client.server, body.get("Uri"), proxy.string_map(body, "Arguments")),
            check_status=False,
            headers=proxy.string_map(body, "HttpHeaders"),
            stream=True,
        )
        answer = RemoteAnswer(request, client, response)
        content: bytes | StreamedBody = answer if request.streams else answer.to_bytes()
    except RemoteError as exc:
        raise _remote_failed(exc) from None
    content_type = response.headers.get("content-type", "application/octet-stream")
    headers = {"Content-Security-Policy": "sandbox"}
    return deliver(request, WebResponse(response.status_code, content, headers, content_type))


@service.route("/servers/{name}/qido", "POST", scope="admin")
def proxy_qido(request: WebRequest, name: str) -> WebResponse:
    client, body = _client(request, name), _body(request)
    body["HttpHeaders"] = {
        **proxy.string_map(body, "HttpHeaders"),
        "Accept": "application/dicom+json",
    }
    try:
        response = proxy.get(client, body)
        answer = proxy.simplified_qido(response.json() if response.content.strip() else [])
    except RemoteError as exc:
        raise _remote_failed(exc) from None
    except (ValueError, AttributeError):
        raise BadGateway(
            f"server {name!r} answered the search with something not DICOM JSON"
        ) from None
    return json_response(answer)


@service.route("/servers/{name}/delete", "POST", scope="admin")
def proxy_delete(request: WebRequest, name: str) -> WebResponse:
    try:
        proxy.delete(_client(request, name), _body(request))
    except RemoteError as exc:
        raise _remote_failed(exc) from None
    return json_response({})


@service.route("/servers/{name}/stow", "POST", scope="admin")
def stow(request: WebRequest, name: str) -> WebResponse:
    """Send stored resources with STOW-RS (a DicomWebStowClient job, synchronous by default)."""
    server, body = request.context.servers.get(name), _body(request)
    resources = resolve_resources(request.context.index, body.get("Resources"))
    total = sum(_count(request, r) for r in resources)
    job = jobs.new_job(
        jobs.STOW,
        server.name,
        {
            "Resources": resources,
            "HttpHeaders": proxy.string_map(body, "HttpHeaders"),
            "InstancesTotal": total,
        },
        {"Server": server.name, "Resources": body["Resources"]},
        _priority(body),
    )
    return _run(request, job, _flag(body, "Synchronous", True))


def _count(request: WebRequest, resource: list[str]) -> int:
    index = request.context.index
    if len(resource) == 3:
        return 1
    if len(resource) == 2:
        return index.get_series(*resource).num_instances
    return index.get_study(resource[0]).num_instances


@service.route("/servers/{name}/retrieve", "POST", scope="admin")
def retrieve(request: WebRequest, name: str) -> WebResponse:
    """Retrieve studies, series or instances by UID (a DicomWebWadoRetrieveClient job)."""
    server, body = request.context.servers.get(name), _body(request)
    resources = body.get("Resources")
    if not isinstance(resources, list) or not resources:
        raise BadRequest('Resources must be a non-empty list of {"Study", "Series", "Instance"}')
    limit_job_resources(len(resources))
    for position, resource in enumerate(resources):
        if not isinstance(resource, dict):
            raise BadRequest(f'Resources[{position}] must be {{"Study", "Series", "Instance"}}')
        uid_path(resource, position)
    job = jobs.new_job(
        jobs.RETRIEVE,
        server.name,
        {
            "Resources": resources,
            "HttpHeaders": proxy.string_map(body, "HttpHeaders"),
            "Arguments": proxy.string_map(body, "Arguments"),
        },
        {"Server": server.name, "Resources": resources},
        _priority(body),
    )
    return _run(request, job, _flag(body, "Synchronous", True))


@service.route("/servers/{name}/wado", "POST", scope="admin")
def wado(request: WebRequest, name: str) -> WebResponse:
    """Retrieve any WADO-RS resource (`Uri`) into the store; asynchronous by default."""
    server, body = request.context.servers.get(name), _body(request)
    arguments = proxy.string_map(body, "Arguments")
    remote_url(server, body.get("Uri"), arguments)
    job = jobs.new_job(
        jobs.RETRIEVE,
        server.name,
        {
            "Uri": body["Uri"],
            "HttpHeaders": proxy.string_map(body, "HttpHeaders"),
            "Arguments": arguments,
        },
        {"Server": server.name, "Uri": body["Uri"]},
        _priority(body),
    )
    return _run(request, job, _flag(body, "Synchronous", False))


def job_path(job: JobRecord) -> dict[str, str]:
    return {"ID": job.id, "Path": f".././../jobs/{job.id}"}


def _run(request: WebRequest, job: JobRecord, synchronous: bool) -> WebResponse:
    ctx = request.context
    size = len(json.dumps([job.params, job.content]))
    if size > MAX_JOB_REQUEST_BYTES:
        raise PayloadTooLarge(
            f"the job's Uri, Arguments, HttpHeaders and Resources take {size} bytes as JSON; "
            f"a job takes at most {MAX_JOB_REQUEST_BYTES}"
        )
    if not synchronous:
        return json_response(job_path(jobs.submit(ctx, job)))
    job = jobs.run_synchronously(ctx, job)
    if job.state == "Success":
        return json_response(jobs.job_content(ctx, job))
    if job.state == "Failure":
        raise BadGateway(f"job {job.id} ({job.type}) failed: {job.error_description}")
    warning = warning_header(
        request.header("host", "-"),
        [
            "the job goes on after the synchronous deadline; follow it at "
            f"{request.dicomweb_root}/jobs/{job.id}"
        ],
    )
    return json_response(job_path(job), 202, headers=warning)
