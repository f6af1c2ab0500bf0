"""The built Lambda package, unpacked, run on API Gateway REST (v1) events and S3 events under
moto, with IAM enforced: the handlers' AWS calls carry credentials that hold exactly the
synthesized role policy, so a permission the stack forgot fails a test here.

Three adaptations to moto, and only these: moto authorizes S3 calls against the object's ARN
but the calls of the other services the code makes against the resource `*` (moto 5.2 names a
resource for S3, IAM, SQS and STS only), so only S3 statements are checked for their
resources too, the others (DynamoDB, Step Functions, Secrets Manager) for their actions; moto
checks `dynamodb:TransactWriteItems`, which IAM authorizes through the actions a transaction
holds, so it is granted when those (Put, Update, Delete) are; and moto authorizes
DeleteObjects as `s3:DeleteObject` on the bucket's ARN, where S3 authorizes each of its keys
on the object's ARN, so a grant of `s3:DeleteObject` on the bucket's objects is given on the
bucket too (without it moto reports every key as AccessDenied). The environment is
the synthesized functions' own, with `InlineLimit` lowered to 1 MB so that a 3.7 MB instance
takes the 303 path as a 10 MB series would on AWS.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import pytest
import requests
from conftest import logical_id, python_in_package, resources_of_type

from infra.auth import PACKAGING_POOL_ARN, RESOURCE_SERVER
from tests.apigateway import api_gateway_event

REGION = "us-east-1"
HOST = "abc123.execute-api.us-east-1.amazonaws.com"
INLINE_LIMIT = 1_000_000
CT = "2020-08-12-Christopher.dcm"
CT_STUDY = "1.2.840.113704.9.1000.16.0.20190613103939444"
LARGE = "Issue164.dcm"
"""3.7 MB: under the 4 MB STOW limit, over the lowered inline limit."""
LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024
"""A synchronous invocation's response payload, at most (Lambda Developer Guide, quotas)."""
TRANSACTION_ACTIONS = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
SCHEDULED_EVENT = {
    "version": "0",
    "id": "89d1a02d-5ec7-412e-82f5-13505f849b41",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-12-06T23:45:00Z",
    "region": REGION,
    "resources": [f"arn:aws:events:{REGION}:123456789012:rule/dev-SweepSchedule80B1140B"],
    "detail": {},
}
"""What EventBridge sends a rule's target on schedule (EventBridge User Guide, "Creating a
rule that runs on a schedule")."""
ADMIN = "admin@example.org"


def signed_in_context(authorizer: str) -> dict[str, Any]:
    """What API Gateway adds to a proxy event's `requestContext` for a caller its authorizer
    verified who holds every scope (API Gateway Developer Guide, "Input format of a Lambda
    function for proxy integration"): a Cognito access token's claims, a Lambda token
    authorizer's context (the app's `oidc`), or a SigV4 caller's identity (`iam`)."""
    from chalicelib.config import SCOPES

    scopes = " ".join(f"{RESOURCE_SERVER}/{s}" for s in SCOPES)
    if authorizer == "cognito":
        claims = {"sub": "4f1e-admin", "username": ADMIN, "token_use": "access", "scope": scopes}
        return {"authorizer": {"claims": claims}}
    if authorizer == "oidc":
        return {"authorizer": {"principalId": ADMIN, "scope": scopes, "integrationLatency": 3}}
    if authorizer == "iam":
        arn = "arn:aws:iam::123456789012:user/admin"
        return {"identity": {"sourceIp": "203.0.113.9", "userArn": arn, "user": "AIDAADMIN"}}
    return {}


@contextlib.contextmanager
def iam_enforced(free_calls: int) -> Iterator[None]:
    """What `moto.core.set_initial_no_auth_action_count` does around a function, for a `with`
    block (a session fixture): the first `free_calls` requests are not authorized, every later
    one is checked against the caller's IAM policies."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    settings.INITIAL_NO_AUTH_ACTION_COUNT = free_calls
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = saved


def presigned(method: str, url: str, **options: Any) -> requests.Response:
    """A client's request to a presigned URL. moto's IAM check reads the Authorization header
    only, and a presigned URL carries its signature in the query string: the check is off for
    this request (the Lambda's own calls stay checked)."""
    with iam_enforced(free_calls=1):
        return requests.request(method, url, timeout=30, **options)


def _resolve(value: Any, arns: dict[str, str]) -> Any:
    """A policy value with this stack's Refs and GetAtts replaced by concrete ARNs."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return arns[value["Fn::GetAtt"][0]]
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_resolve(p, arns) for p in parts)
    if isinstance(value, list):
        return [_resolve(v, arns) for v in value]
    return value


def role_policy(template: dict[str, Any], role: str, arns: dict[str, str]) -> dict[str, Any]:
    """The synthesized policies of `role`, as one document moto can enforce; `arns` maps the
    bucket's logical id to its ARN."""
    role_id = logical_id(template, "AWS::IAM::Role", role)
    statements = []
    for policy in resources_of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                actions = set(actions if isinstance(actions, list) else [actions])
                if all(a.startswith("s3:") for a in actions):
                    resource = _resolve(statement["Resource"], arns)
                    if "s3:DeleteObject" in actions:  # DeleteObjects (module docstring)
                        objects = resource if isinstance(resource, list) else [resource]
                        resource = objects + [r[:-2] for r in objects if r.endswith("/*")]
                else:
                    resource = "*"  # what moto authorizes against (module docstring)
                if actions >= TRANSACTION_ACTIONS:
                    actions.add("dynamodb:TransactWriteItems")
                statement = {**statement, "Action": sorted(actions), "Resource": resource}
                statements.append(statement)
    assert statements, f"no policy for {role}"
    return {"Version": "2012-10-17", "Statement": statements}


def _create_table(client: Any, name: str, properties: dict[str, Any]) -> None:
    """The table exactly as the template declares it."""
    client.create_table(
        TableName=name,
        BillingMode=properties["BillingMode"],
        KeySchema=properties["KeySchema"],
        AttributeDefinitions=properties["AttributeDefinitions"],
        GlobalSecondaryIndexes=properties["GlobalSecondaryIndexes"],
    )


@dataclass
class LambdaTask:
    """The packaged app in a moto account shaped like the stack."""

    app: ModuleType
    bucket: str
    credentials: dict[str, dict[str, str]]
    """Access keys per role (ApiHandlerRole, UploadIngestRole, JobsWorkerRole, SweepRole), and
    `admin` for set-up."""
    monkeypatch: pytest.MonkeyPatch

    def as_role(self, role: str) -> None:
        """Run the next invocations as a fresh container of the function with `role`."""
        from chalicelib.context import default_context

        for name, value in self.credentials[role].items():
            self.monkeypatch.setenv(name, value)
        boto3.DEFAULT_SESSION = None  # it caches the credentials it first resolved
        default_context.cache_clear()


@pytest.fixture(scope="session")
def lambda_task(template: dict[str, Any], package_dir: Path) -> Iterator[LambdaTask]:
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp, mock_aws():
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }.items():
            mp.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        with iam_enforced(free_calls=3):
            iam = boto3.client("iam")
            iam.create_user(UserName="admin")
            iam.put_user_policy(
                UserName="admin",
                PolicyName="setup",
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                    }
                ),
            )
            key = iam.create_access_key(UserName="admin")["AccessKey"]
            credentials = {
                "admin": {
                    "aws_access_key_id": key["AccessKeyId"],
                    "aws_secret_access_key": key["SecretAccessKey"],
                }
            }
            admin = boto3.Session(region_name=REGION, **credentials["admin"])
            bucket, table = f"blobs-{uuid.uuid4().hex[:8]}", "index"
            admin.client("s3").create_bucket(Bucket=bucket)
            (table_properties,) = [
                r["Properties"]
                for r in resources_of_type(template, "AWS::DynamoDB::Table").values()
            ]
            _create_table(admin.client("dynamodb"), table, table_properties)
            arns = {logical_id(template, "AWS::S3::Bucket", "Blobs"): f"arn:aws:s3:::{bucket}"}
            admin_iam = admin.client("iam")
            for role in ("ApiHandlerRole", "UploadIngestRole", "JobsWorkerRole", "SweepRole"):
                admin_iam.create_user(UserName=role)
                admin_iam.put_user_policy(
                    UserName=role,
                    PolicyName="synthesized",
                    PolicyDocument=json.dumps(role_policy(template, role, arns)),
                )
                key = admin_iam.create_access_key(UserName=role)["AccessKey"]
                credentials[role] = {
                    "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                    "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                }

            env = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
            options = json.loads(env["DICOMWEB_CONFIG"])
            options.setdefault("DicomWeb", {})["InlineLimit"] = INLINE_LIMIT
            options["DicomWeb"]["ServersInDatabase"] = True  # PUT /servers: secrets on AWS
            mp.setenv("JOBS_STATE_MACHINE_ARN", _jobs_state_machine(admin, template))
            mp.setenv("BACKEND", env["BACKEND"])
            mp.setenv("BUCKET", bucket)
            mp.setenv("TABLE", table)
            mp.setenv("DICOMWEB_CONFIG", json.dumps(options))
            # The stage's authorizer, as the functions get it; a Cognito pool's ARN is a
            # reference in the template.
            mp.setenv("AUTHORIZER", env["AUTHORIZER"])
            if env["AUTHORIZER"] == "cognito":
                mp.setenv("COGNITO_USER_POOL_ARN", PACKAGING_POOL_ARN)
            task = LambdaTask(importlib.import_module("app"), bucket, credentials, mp)
            assert Path(task.app.__file__).parent == package_dir, "not the packaged app"
            task.as_role("ApiHandlerRole")
            yield task


def _jobs_state_machine(admin: boto3.Session, template: dict[str, Any]) -> str:
    """The synthesized jobs state machine in moto (its worker is not run: moto runs Lambda
    code in Docker only); its ARN."""
    from conftest import CDK_OUT

    (machine,) = resources_of_type(template, "AWS::StepFunctions::StateMachine").values()
    key = machine["Properties"]["DefinitionS3Location"]["Key"]
    definition = (CDK_OUT / f"asset.{key}").read_text()
    worker = f"arn:aws:lambda:{REGION}:123456789012:function:jobs-worker"
    definition = definition.replace("${JobsWorkerArn}", worker)
    answer = admin.client("stepfunctions").create_state_machine(
        name="jobs",
        definition=definition,
        roleArn="arn:aws:iam::123456789012:role/jobs-state-machine",
    )
    return answer["stateMachineArn"]


def _route(app: Any, path: str) -> tuple[str, dict[str, str]]:
    """The resource template and path parameters API Gateway would match `path` to."""
    for resource in app.routes:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", resource)
        match = re.fullmatch(pattern, path)
        if match:
            return resource, match.groupdict()
    raise AssertionError(f"no route for {path}")


def invoke(
    task: LambdaTask,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Call the packaged handler with a REST API (v1) proxy event, as API Gateway does."""
    return answer_of(task.app.app, method, path, query, headers, body)


def answer_of(
    app: Any,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    signed_in: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """`app`'s answer to a REST API (v1) proxy event, checked for what API Gateway takes from
    a Lambda proxy integration: a status, string headers, a string body (base64 when
    binary), within Lambda's 6 MB synchronous response (Lambda Developer Guide, quotas).
    `signed_in`: the event carries what the stage's authorizer (`AUTHORIZER`, as the packaged
    app reads it) passes for an administrator; a local app without one ignores it."""
    resource, params = _route(app, path)
    headers = {
        "Host": HOST,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "443",
        "Accept": "*/*",
        **(headers or {}),
    }
    event = api_gateway_event(
        method,
        path,
        resource,
        {k: quote(v, safe="") for k, v in params.items()} or None,
        headers,
        body,
        query,
    )
    if signed_in:
        event["requestContext"].update(signed_in_context(os.environ.get("AUTHORIZER", "none")))
    answer = app(event, None)
    assert isinstance(answer["statusCode"], int), answer
    assert all(isinstance(v, str) for v in (answer.get("headers") or {}).values()), answer
    assert isinstance(answer.get("body") or "", str)
    assert isinstance(answer.get("isBase64Encoded", False), bool)
    assert len(json.dumps(answer)) <= LAMBDA_RESPONSE_LIMIT, (method, path)
    payload = answer.get("body") or ""
    data = base64.b64decode(payload) if answer.get("isBase64Encoded") else payload.encode()
    answer_headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        answer_headers[name.lower()] = ", ".join(values)
    return answer["statusCode"], answer_headers, data


def stow(app: Any, data: bytes) -> tuple[int, dict[str, Any]]:
    """STOW-RS of one instance to `app` (the packaged handler's or a local one)."""
    boundary = "PackagedBoundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    status, _, answer = answer_of(
        app,
        "POST",
        "/dicom-web/studies",
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        body=body,
    )
    return status, json.loads(answer)


def _values(dataset: dict[str, Any], tag: str) -> list[Any]:
    return dataset.get(tag, {}).get("Value", [])


@pytest.fixture(scope="session")
def stored(lambda_task: LambdaTask) -> dict[str, dict[str, str]]:
    """CT and the large instance stored through STOW-RS: their UIDs by file name."""
    from tests.conftest import testdata

    uids = {}
    for name in (CT, LARGE):
        status, answer = stow(lambda_task.app.app, testdata(name).read_bytes())
        assert status == 200, answer
        (item,) = _values(answer, "00081199")
        url = _values(item, "00081190")[0]
        study, series, instance = re.search(
            r"/studies/([^/]+)/series/([^/]+)/instances/([^/]+)$", url
        ).groups()
        assert url.startswith(f"https://{HOST}/api/dicom-web/")  # the stage prefix is kept
        uids[name] = {"study": study, "series": series, "instance": instance}
    return uids


def _instance_path(uids: dict[str, str]) -> str:
    return (
        f"/dicom-web/studies/{uids['study']}/series/{uids['series']}/instances/{uids['instance']}"
    )


def test_packaged_app_imports_no_pixel_module(package_dir: Path) -> None:
    """A cold start of the package: `import app` in a fresh process, from the package only."""
    probe = "import sys, app; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    result = python_in_package(package_dir, probe, {"BACKEND": "aws", "BUCKET": "b", "TABLE": "t"})
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "chalicelib" in loaded
    assert not loaded & {"pydicom", "numpy", "PIL", "pylibjpeg", "libjpeg", "openjpeg", "jpeg_ls"}


def test_packaged_native_dependencies_load(package_dir: Path) -> None:
    """Every compiled dependency imports from the package alone: the shared libraries kept
    when copies were dropped are the ones the loader asks for (infra/packaging.py)."""
    modules = "numpy, PIL.Image, gdcm, libjpeg, openjpeg, rle, jpeg_ls, cryptography.x509"
    result = python_in_package(package_dir, f"import {modules}; print(gdcm.Version.GetVersion())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3.0.26"


def test_packaged_qido_finds_the_stored_study(
    lambda_task: LambdaTask, stored: dict[str, dict[str, str]]
) -> None:
    status, _, body = invoke(
        lambda_task, "GET", "/dicom-web/studies", query={"StudyInstanceUID": CT_STUDY}
    )
    assert status == 200, body
    (study,) = json.loads(body)
    assert _values(study, "0020000D") == [CT_STUDY]


def test_packaged_wado_rs_inline_and_303(
    lambda_task: LambdaTask, stored: dict[str, dict[str, str]]
) -> None:
    from tests.conftest import testdata

    status, headers, body = invoke(
        lambda_task,
        "GET",
        _instance_path(stored[CT]),
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert status == 200 and headers["content-type"].startswith("multipart/related")
    assert testdata(CT).read_bytes() in body

    status, headers, body = invoke(
        lambda_task,
        "GET",
        _instance_path(stored[LARGE]),
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert status == 303, body
    fetched = presigned("GET", headers["location"])
    assert fetched.status_code == 200
    assert testdata(LARGE).read_bytes() in fetched.content


def test_packaged_head_over_the_inline_limit_copies_nothing(
    lambda_task: LambdaTask, stored: dict[str, dict[str, str]]
) -> None:
    """A HEAD of a retrieve whose GET is a 303 through a copy under `tmp/`: a 200 with the
    GET body's Content-Length, and no copy made (RFC 9110 §9.3.2)."""
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    path = _instance_path(stored[LARGE])
    s3 = boto3.client("s3", **lambda_task.credentials["admin"])

    def copies() -> int:
        return s3.list_objects_v2(Bucket=lambda_task.bucket, Prefix="tmp/")["KeyCount"]

    before = copies()
    status, head, body = invoke(lambda_task, "HEAD", path, headers=accept)
    assert (status, body) == (200, b"")
    assert copies() == before
    status, headers, body = invoke(lambda_task, "GET", path, headers=accept)
    assert status == 303, body
    assert copies() == before + 1
    fetched = presigned("GET", headers["location"])
    assert head["content-length"] == str(len(fetched.content))


def test_packaged_metadata_frame_and_rendered(
    lambda_task: LambdaTask, stored: dict[str, dict[str, str]]
) -> None:
    path = _instance_path(stored[CT])
    status, _, body = invoke(
        lambda_task, "GET", path + "/metadata", headers={"Accept": "application/dicom+json"}
    )
    assert status == 200, body
    (metadata,) = json.loads(body)
    assert _values(metadata, "00080018") == [stored[CT]["instance"]]

    status, headers, body = invoke(
        lambda_task,
        "GET",
        path + "/frames/1",
        headers={"Accept": 'multipart/related; type="application/octet-stream"'},
    )
    assert status == 200, body
    assert headers["content-type"].startswith("multipart/related")

    status, headers, body = invoke(
        lambda_task, "GET", path + "/rendered", headers={"Accept": "image/png"}
    )
    assert status == 200, body
    from PIL import Image

    assert Image.open(io.BytesIO(body)).format == "PNG"


def test_packaged_wado_uri_over_the_inline_limit_is_303(
    lambda_task: LambdaTask, stored: dict[str, dict[str, str]]
) -> None:
    from tests.conftest import testdata

    uids = stored[LARGE]
    query = {
        "requestType": "WADO",
        "studyUID": uids["study"],
        "seriesUID": uids["series"],
        "objectUID": uids["instance"],
        "contentType": "application/dicom",
    }
    status, headers, body = invoke(lambda_task, "GET", "/wado", query=query)
    assert status == 303, body
    fetched = presigned("GET", headers["location"])
    assert fetched.status_code == 200
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(fetched.content))
    assert dataset.SOPInstanceUID == uids["instance"]
    assert len(fetched.content) >= len(testdata(LARGE).read_bytes()) * 0.9


def test_packaged_upload_through_presigned_put_and_s3_event(lambda_task: LambdaTask) -> None:
    from tests.conftest import testdata

    status, _, body = invoke(
        lambda_task,
        "POST",
        "/dicom-web/uploads",
        headers={"Content-Type": "application/json"},
        body=json.dumps({"Files": 1}).encode(),
    )
    assert status == 201, body
    upload = json.loads(body)
    (file,) = upload["Files"]
    data = testdata("ColorTestImageJ.dcm").read_bytes()
    put = presigned("PUT", file["Url"], data=data, headers=file["Headers"])
    assert put.status_code == 200, put.text

    key = urlsplit(file["Url"]).path.removeprefix("/")
    event = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": lambda_task.bucket},
                    "object": {"key": key, "size": len(data)},
                },
            }
        ]
    }
    lambda_task.as_role("UploadIngestRole")
    try:
        outcome = lambda_task.app.ingest_upload(event, None)
    finally:
        lambda_task.as_role("ApiHandlerRole")
    assert outcome == [{"Key": key, "Status": "stored"}]

    path = urlsplit(upload["Path"]).path.removeprefix("/api")
    status, _, body = invoke(lambda_task, "GET", path, headers={"Accept": "application/dicom+json"})
    assert status == 200, body
    (item,) = _values(json.loads(body), "00081199")
    assert _values(item, "00081190")


def test_packaged_unknown_study_is_404_json(lambda_task: LambdaTask) -> None:
    status, _, body = invoke(
        lambda_task,
        "GET",
        "/dicom-web/studies/1.2.3/metadata",
        headers={"Accept": "application/dicom+json"},
    )
    assert status == 404
    assert json.loads(body)["Status"] == 404


ROUTE_VALUES = {
    "frames": "1",
    "file": "index.html",
    "name": "nowhere",
    "job_id": "nojob",
    "upload": "noupload",
    "number": "1",
}
"""A route's path parameters that name nothing stored (UIDs are 1.2.3), bulk tags PixelData."""


def _concrete(route: str, values: dict[str, str]) -> str:
    path = re.sub(r"\{p\d+\}", "7FE00010", route)
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1.2.3"), path)


def test_packaged_handler_answers_every_route_as_make_run(
    lambda_task: LambdaTask, stored: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    """Every route of the packaged app's table (HEAD beside each GET), as an API Gateway
    event, under the API role's policy: a well-formed proxy answer, never a 5xx, and the
    status a local app (`make run`'s adapters, the stage's options) answers the same event
    with. A GET or HEAD names the stored CT; other methods name nothing stored, so that
    nothing is changed (a DELETE answers 404, a POST or PUT without a body 4xx)."""
    from chalicelib.config import load_settings
    from chalicelib.context import build_context, default_context
    from chalicelib.server.api import build_route_table, create_app
    from tests.conftest import testdata

    local_context = build_context(
        load_settings({"DICOMWEB_CONFIG": os.environ["DICOMWEB_CONFIG"], "DATA_DIR": str(tmp_path)})
    )
    local = create_app(lambda: local_context)
    assert stow(local, testdata(CT).read_bytes())[0] == 200
    table = build_route_table(default_context().settings)
    calls = [(m, route) for route, handlers in table.routes.items() for m in handlers]
    calls += [("HEAD", route) for route, handlers in table.routes.items() if "GET" in handlers]
    assert len(table.routes) > 40
    differences = {}  # (method, route): (the packaged handler's status, the local app's)
    for method, route in calls:
        values = ROUTE_VALUES | (stored[CT] if method in ("GET", "HEAD") else {})
        path = _concrete(route, values)
        on_aws, _, body = invoke(lambda_task, method, path)
        assert on_aws < 500, (method, path, body)
        on_local = answer_of(local, method, path)[0]
        if on_aws != on_local:
            differences[method, route] = (on_aws, on_local)
    assert differences == {}


def test_packaged_handler_needs_the_authorizer_s_verdict(lambda_task: LambdaTask) -> None:
    """Behind an authorizer, an event without its verdict is answered 401 (API Gateway sends
    none such); without one (`AUTHORIZER=none`) it is answered."""
    status, _, body = answer_of(lambda_task.app.app, "GET", "/dicom-web/studies", signed_in=False)
    assert status == (200 if os.environ["AUTHORIZER"] == "none" else 401), body


def test_packaged_policy_without_a_grant_is_refused(
    template: dict[str, Any], lambda_task: LambdaTask
) -> None:
    """The enforcement itself: the same call under a policy missing s3:PutObject fails."""
    from botocore.exceptions import ClientError

    arns = {logical_id(template, "AWS::S3::Bucket", "Blobs"): f"arn:aws:s3:::{lambda_task.bucket}"}
    policy = role_policy(template, "ApiHandlerRole", arns)
    for statement in policy["Statement"]:
        statement["Action"] = [a for a in statement["Action"] if a != "s3:PutObject"]
    iam = boto3.client("iam", **lambda_task.credentials["admin"])
    iam.create_user(UserName="no-put")
    iam.put_user_policy(UserName="no-put", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="no-put")["AccessKey"]
    s3 = boto3.client(
        "s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    )
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.put_object(Bucket=lambda_task.bucket, Key="tmp/x", Body=b"x")


def start_stow_job(lambda_task: LambdaTask, name: str, resource: Any) -> str:
    """Define the remote server `name` (a refused port, with a password kept in Secrets
    Manager) and start an asynchronous STOW job of `resource` to it: the job's ID."""
    server = {"Url": "http://127.0.0.1:9/dicom-web", "Username": "u", "Password": "secret"}
    json_type = {"Content-Type": "application/json"}
    status, _, body = invoke(
        lambda_task,
        "PUT",
        f"/dicom-web/servers/{name}",
        headers=json_type,
        body=json.dumps(server).encode(),
    )
    assert status == 200, body
    request = {"Resources": [resource], "Synchronous": False}
    status, _, body = invoke(
        lambda_task,
        "POST",
        f"/dicom-web/servers/{name}/stow",
        headers=json_type,
        body=json.dumps(request).encode(),
    )
    assert status == 200, body
    return json.loads(body)["ID"]


def test_packaged_client_job_starts_and_stops_an_execution(
    lambda_task: LambdaTask, stored: dict[str, dict[str, str]]
) -> None:
    """A remote server with a password (Secrets Manager), a STOW job (Step Functions) of a
    study named by its Orthanc ID (found by scanning the index's studies), its cancel, the
    server's removal: the API handler's grants for the client side."""
    import pydicom

    from chalicelib.dicom.ids import orthanc_ids
    from tests.conftest import testdata

    patient_id = pydicom.dcmread(testdata(CT), stop_before_pixels=True).PatientID
    study_id = orthanc_ids(patient_id, stored[CT]["study"], "", "")["study"]
    job_id = start_stow_job(lambda_task, "peer", study_id)
    executions = boto3.client("stepfunctions", **lambda_task.credentials["admin"])
    machine = os.environ["JOBS_STATE_MACHINE_ARN"]
    (execution,) = executions.list_executions(stateMachineArn=machine)["executions"]
    assert execution["name"].startswith(job_id)

    status, _, body = invoke(lambda_task, "POST", f"/dicom-web/jobs/{job_id}/cancel", body=b"")
    assert status == 200, body
    status, _, body = invoke(lambda_task, "GET", f"/dicom-web/jobs/{job_id}")
    assert json.loads(body)["State"] == "Failure"
    assert invoke(lambda_task, "DELETE", "/dicom-web/servers/peer")[0] == 200


def test_packaged_jobs_worker_runs_a_step_and_records_its_failure(
    lambda_task: LambdaTask, stored: dict[str, dict[str, str]]
) -> None:
    """The worker Lambda on the state machine's two events, under the worker role's policy:
    RunStep of a STOW job to a server that refuses connections reads the job, the server and
    its password (Secrets Manager) and the study, and raises TransientJobError for the
    state machine to retry; MarkFailed records the failure on the job."""
    from chalicelib.context import default_context
    from chalicelib.jobs import TransientJobError

    job_id = start_stow_job(lambda_task, "refusing", {"Study": stored[CT]["study"]})
    execution = default_context().jobs.get(job_id).execution

    lambda_task.as_role("JobsWorkerRole")
    try:
        with pytest.raises(TransientJobError):
            lambda_task.app.jobs_worker({"JobId": job_id, "Execution": execution}, None)
        cause = json.dumps({"errorMessage": "connection refused", "errorType": "TransientJobError"})
        answer = lambda_task.app.jobs_worker(
            {"JobId": job_id, "Error": "TransientJobError", "Cause": cause}, None
        )
    finally:
        lambda_task.as_role("ApiHandlerRole")
    assert answer == {"JobId": job_id, "Done": True, "Continued": False}
    status, _, body = invoke(lambda_task, "GET", f"/dicom-web/jobs/{job_id}")
    assert status == 200, body
    job = json.loads(body)
    assert job["State"] == "Failure" and "connection refused" in job["ErrorDescription"], job
    assert invoke(lambda_task, "DELETE", "/dicom-web/servers/refusing")[0] == 200


def test_packaged_sweep_finishes_a_delete_interrupted_after_its_commit(
    lambda_task: LambdaTask,
) -> None:
    """A delete stopped between its index commit and its blob removal (a stopped Lambda
    leaves exactly this: the instance gone from the index, its blobs listed in a pending
    item) is finished by the sweep Lambda on EventBridge's scheduled event, under the sweep
    role's policy."""
    from chalicelib.context import default_context
    from tests.conftest import testdata

    status, answer = stow(lambda_task.app.app, testdata("KarstenHilbertRF.dcm").read_bytes())
    assert status == 200, answer
    (item,) = _values(answer, "00081199")
    study, series, instance = re.search(
        r"/studies/([^/]+)/series/([^/]+)/instances/([^/]+)$", _values(item, "00081190")[0]
    ).groups()
    s3 = boto3.client("s3", **lambda_task.credentials["admin"])

    def stored_keys() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=lambda_task.bucket)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    index = default_context().index
    (record,) = index.delete_instance(study, series, instance).instances  # the commit point
    owned = set(record.blob_keys())
    before = stored_keys()
    assert owned and owned <= before
    assert owned <= set(index.pending_blob_deletes())

    lambda_task.as_role("SweepRole")
    try:
        outcome = lambda_task.app.sweep(SCHEDULED_EVENT, None)
    finally:
        lambda_task.as_role("ApiHandlerRole")
    assert outcome["BlobsDeleted"] == len(owned)
    assert stored_keys() == before - owned
    assert default_context().index.pending_blob_deletes() == []


def test_packaged_sweep_removes_what_stopped_stores_and_deletes_leave(
    lambda_task: LambdaTask,
) -> None:
    """Under the sweep role's policy, the sweep Lambda removes the blobs of a store stopped
    before its index commit once its write intent is old (an intent recorded that long ago
    is put as the adapter would have), and a pending folder of derived documents. A STOW
    under the API role ends its own intents (BatchWriteItem)."""
    from chalicelib.context import default_context
    from chalicelib.ingest import INTERRUPTED_WRITE_AGE
    from chalicelib.storage.dynamo.items import write_item
    from chalicelib.storage.ports import BlobWrite
    from chalicelib.storage.records import utc_stamp
    from tests.conftest import testdata

    status, answer = stow(lambda_task.app.app, testdata("ColorTestImageJ.dcm").read_bytes())
    assert status == 200, answer
    context = default_context()
    assert context.index.stale_blob_writes(utc_stamp(datetime.now(UTC) + timedelta(1))) == []

    keys = ("1.2.3/1.2.3.4/1.2.3.4.5_0123456789abcdef-00000000.dcm", "1.2.3/1.2.3.4/m.json.gz")
    old = datetime.now(UTC) - INTERRUPTED_WRITE_AGE - timedelta(minutes=1)
    stopped = BlobWrite("1.2.3", "1.2.3.4", "1.2.3.4.5", keys, utc_stamp(old))
    dynamodb = boto3.client("dynamodb", **lambda_task.credentials["admin"])
    dynamodb.put_item(TableName=os.environ["TABLE"], Item=write_item(stopped))
    thumbnail = "thumbnails/1.2.3/1.2.3.4.jpg"
    for key in (*keys, thumbnail):
        context.blobs.put(key, b"x")
    context.index.add_pending_deletes(["thumbnails/1.2.3/"])

    lambda_task.as_role("SweepRole")
    try:
        outcome = lambda_task.app.sweep(SCHEDULED_EVENT, None)
    finally:
        lambda_task.as_role("ApiHandlerRole")
    assert (outcome["InterruptedBlobsDeleted"], outcome["BlobsDeleted"]) == (2, 1)
    context = default_context()
    assert not any(context.blobs.exists(key) for key in (*keys, thumbnail))
    assert context.index.stale_blob_writes(utc_stamp()) == []
    assert context.index.pending_blob_deletes() == []


def test_packaged_sweep_fails_a_running_job_whose_execution_ended(
    lambda_task: LambdaTask,
) -> None:
    """A job left Running by an execution stopped from the console (no MarkFailed ran) is
    marked Failure by the sweep Lambda, under the sweep role's policy; a job whose execution
    runs is left alone."""
    from chalicelib import jobs
    from chalicelib.context import default_context

    ctx = default_context()

    def running() -> str:
        job = jobs.submit(ctx, jobs.new_job(jobs.STOW, "peer", {"Resources": []}, {}, 0))
        job.state = "Running"  # what its execution's first step saves
        return ctx.jobs.save(job).id

    abandoned, alive = running(), running()
    states = boto3.client("stepfunctions", **lambda_task.credentials["admin"])
    states.stop_execution(executionArn=ctx.jobs.get(abandoned).execution)

    lambda_task.as_role("SweepRole")
    try:
        outcome = lambda_task.app.sweep(SCHEDULED_EVENT, None)
    finally:
        lambda_task.as_role("ApiHandlerRole")
    assert outcome["JobsFailed"] == [abandoned]
    ctx = default_context()
    assert ctx.jobs.get(abandoned).state == "Failure"
    assert ctx.jobs.get(alive).state == "Running"
    jobs.cancel(ctx, alive)


def test_packaged_sweep_deletes_finished_jobs_past_jobs_history_size(
    lambda_task: LambdaTask,
) -> None:
    """Jobs kept past JobsHistorySize by their grace (jobs.RECENTLY_ENDED_SECONDS) stayed
    until another job ended; the sweep Lambda deletes them, those that ended first, record
    and blobs, under the sweep role's policy (the jobs of other tests, ended later, stay)."""
    from chalicelib import jobs
    from chalicelib.context import default_context
    from chalicelib.storage.ports import NotFound

    ctx = default_context()
    ended = []
    for n in range(ctx.settings.jobs_history_size + 2):
        job = jobs.new_job(jobs.STOW, "peer", {"Resources": []}, {}, 0)
        job.state, job.completion_time = "Success", f"20200101T0000{n:02}.000000"
        ctx.jobs.create(job)
        ctx.blobs.put(f"jobs/{job.id}/list/0.json", b"[]", "application/json")
        ended.append(job.id)

    lambda_task.as_role("SweepRole")
    try:
        outcome = lambda_task.app.sweep(SCHEDULED_EVENT, None)
    finally:
        lambda_task.as_role("ApiHandlerRole")
    forgotten = outcome["JobsForgotten"]
    assert len(forgotten) >= 2 and forgotten == ended[: len(forgotten)]
    ctx = default_context()
    for job_id in forgotten:
        with pytest.raises(NotFound):
            ctx.jobs.get(job_id)
        assert not ctx.blobs.exists(f"jobs/{job_id}/list/0.json")
    for job_id in ended[len(forgotten) :]:
        jobs.delete(ctx, job_id)
