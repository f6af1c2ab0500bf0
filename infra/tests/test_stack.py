"""The synthesized stack, checked offline: CDK assertions on the template, and cfn-lint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from conftest import CDK_OUT, ROOT, STAGE, logical_id, resources_of_type

from infra.auth import stage_authorizer
from infra.stages import KEEPS_DATA

APP_FUNCTIONS = ("APIHandler", "IngestUpload", "JobsWorker", "Sweep")
STORAGE_ACTIONS = {
    # chalicelib/storage/s3.py: get_object and head_object, put_object, delete_object(s),
    # list_objects_v2; presigned GETs and PUTs are signed with the same role.
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    # chalicelib/storage/dynamo/ (transact_write_items is authorized per action it holds).
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:Query",
    "dynamodb:Scan",  # index.iter_studies: Orthanc IDs in a call to a remote server
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    # Lambda's own logging, to the function's log group.
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}
EXPECTED_ACTIONS = {
    # chalicelib/storage/jobs_aws.py: start_execution, stop_execution; storage/secrets.py.
    "ApiHandlerRole": STORAGE_ACTIONS
    | {"states:StartExecution", "states:StopExecution"}
    | {
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DeleteSecret",
    },
    # An event that failed every retry goes to the FailedEvents queue.
    "UploadIngestRole": STORAGE_ACTIONS | {"sqs:SendMessage"},
    # jobs.handle_worker_event: a long job goes on in a new execution (start_execution).
    "JobsWorkerRole": STORAGE_ACTIONS | {"secretsmanager:GetSecretValue", "states:StartExecution"},
    # app.sweep: server/delete.finish_pending_deletes and ingest.remove_interrupted_writes
    # (no blob read, no GSI) and jobs.fail_abandoned (the job items, the status of their
    # executions).
    "SweepRole": {
        "s3:DeleteObject",
        "s3:ListBucket",
        "dynamodb:Query",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "states:DescribeExecution",
        "sqs:SendMessage",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    },
}

CALLED_AS = {
    "s3:GetObject": ("get_object", "head_object"),
    "s3:PutObject": ("put_object",),
    "s3:DeleteObject": ("delete_object", "delete_objects"),
    "s3:ListBucket": ("list_objects_v2",),
}
"""The boto3 operations an S3 action authorizes; another action's is its name in snake case
(`dynamodb:BatchGetItem`: `batch_get_item`)."""
CALLED_BY_LAMBDA = {"logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"}
"""Actions that Lambda itself takes with the role (logging, on-failure destinations)."""

LAMBDA_TRANSIENT_ERRORS = {
    # Step Functions Developer Guide, "Handle Lambda service exceptions"
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    # the account's concurrency is used up
    "Lambda.TooManyRequestsException",
}

# cfn-lint rules not applied, each with its reason.
CFN_LINT_IGNORED = {
    # CDK's own custom-resource providers (S3 auto-delete, bucket notifications) declare a
    # DependsOn on their role beside the GetAtt of it: redundant, harmless, not ours to change.
    "W3005": "redundant DependsOn in CDK-generated custom resource providers",
}


@pytest.fixture(scope="module")
def assertions(template: dict[str, Any]) -> Template:
    return Template.from_json(template)


def test_api_takes_every_media_type_as_binary(assertions: Template) -> None:
    assertions.has_resource_properties(
        "AWS::Serverless::Api",
        {"DefinitionBody": Match.object_like({"x-amazon-apigateway-binary-media-types": ["*/*"]})},
    )


def test_functions_get_every_variable_the_app_reads(
    template: dict[str, Any], package_dir: Path
) -> None:
    from chalicelib.config import _ENV_KEYS

    known = set(_ENV_KEYS) | {"DICOMWEB_CONFIG"}
    bucket = logical_id(template, "AWS::S3::Bucket", "Blobs")
    table = logical_id(template, "AWS::DynamoDB::Table", "Index")
    for name in APP_FUNCTIONS:
        env = template["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert env["BACKEND"] == "aws"
        assert env["BUCKET"] == {"Ref": bucket}
        assert env["TABLE"] == {"Ref": table}
        assert set(env) <= known, set(env) - known  # no name the app would not read
        json.loads(env["DICOMWEB_CONFIG"])  # the stage's options parse
    machine = logical_id(template, "AWS::StepFunctions::StateMachine", "Jobs")
    for name in ("APIHandler", "Sweep"):
        env = template["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert env["JOBS_STATE_MACHINE_ARN"] == {"Ref": machine}


def test_jobs_state_machine_runs_the_worker(template: dict[str, Any]) -> None:
    (machine,) = resources_of_type(template, "AWS::StepFunctions::StateMachine").values()
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    assert substitutions == {"JobsWorkerArn": {"Fn::GetAtt": ["JobsWorker", "Arn"]}}
    role = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in resources_of_type(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert {s["Action"] for s in statements} == {"lambda:InvokeFunction"}


def test_table_has_every_index_the_adapter_queries(
    template: dict[str, Any], package_dir: Path
) -> None:
    from chalicelib.storage.dynamo import table_definition

    definition = table_definition()
    (table,) = resources_of_type(template, "AWS::DynamoDB::Table").values()
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == definition["KeySchema"]
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    deployed = {i["IndexName"]: i for i in properties["GlobalSecondaryIndexes"]}
    assert set(deployed) == {i["IndexName"] for i in definition["GlobalSecondaryIndexes"]}
    for index in definition["GlobalSecondaryIndexes"]:
        assert deployed[index["IndexName"]]["KeySchema"] == index["KeySchema"]
        assert deployed[index["IndexName"]]["Projection"] == index["Projection"]
    assert properties.get("DeletionProtectionEnabled", False) is KEEPS_DATA[STAGE]


def test_kept_stages_retain_their_bucket_and_table(template: dict[str, Any]) -> None:
    """A stage that keeps its data (`aws`, `prod`) leaves its bucket and table behind when its
    stack is deleted or a change would replace them; `dev` deletes them."""
    policy = "Retain" if KEEPS_DATA[STAGE] else "Delete"
    for kind, prefix in (("AWS::S3::Bucket", "Blobs"), ("AWS::DynamoDB::Table", "Index")):
        resource = template["Resources"][logical_id(template, kind, prefix)]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == (policy, policy)


def test_bucket_is_private_encrypted_tls_only_and_expires_answers(assertions: Template) -> None:
    assertions.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": Match.any_value(),
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like({"Prefix": "tmp/", "ExpirationInDays": 1}),
                        Match.object_like({"Prefix": "uploads/", "ExpirationInDays": 7}),
                    ]
                )
            },
            "CorsConfiguration": Match.any_value(),
        },
    )
    assertions.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def _role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    role_id = logical_id(template, "AWS::IAM::Role", role)
    assert "ManagedPolicyArns" not in template["Resources"][role_id]["Properties"]
    statements = []
    for policy in resources_of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


@pytest.mark.parametrize("role", sorted(EXPECTED_ACTIONS))
def test_roles_allow_exactly_the_calls_of_the_code_on_named_resources(
    template: dict[str, Any], role: str
) -> None:
    statements = _role_statements(template, role)
    granted: dict[str, list[Any]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        assert "*" not in resources, statement
        for resource in resources:
            assert isinstance(resource, dict), f"{role}: {resource!r} is not this stack's"
            referenced = json.dumps(resource)
            assert any(
                n in referenced for n in ("Blobs", "Index", "Logs", "Jobs", "FailedEvents")
            ), resource
        actions = statement["Action"]
        for action in actions if isinstance(actions, list) else [actions]:
            granted.setdefault(action, []).extend(resources)
    assert set(granted) == EXPECTED_ACTIONS[role], set(granted) ^ EXPECTED_ACTIONS[role]


def test_every_granted_action_is_called_by_the_code(
    template: dict[str, Any], package_dir: Path
) -> None:
    """No role holds an action the packaged code never calls: each granted action's boto3
    operation is called (`.op(`) or named (`"op"`, Table.pages and _batch) in chalicelib."""
    source = "\n".join(p.read_text() for p in (package_dir / "chalicelib").rglob("*.py"))
    granted = {
        action
        for role in EXPECTED_ACTIONS
        for statement in _role_statements(template, role)
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert granted >= {"dynamodb:Query", "s3:GetObject"}
    unused = set()
    for action in granted - CALLED_BY_LAMBDA:
        name = action.split(":")[1]
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        operations = CALLED_AS.get(action, (snake,))
        if not any(re.search(rf"[.\"']{op}[\"'(]", source) for op in operations):
            unused.add(action)
    assert unused == set()


def test_gateway_answers_unknown_paths_404_and_large_bodies_413_as_json(
    template: dict[str, Any],
) -> None:
    answers = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in resources_of_type(template, "AWS::ApiGateway::GatewayResponse").values()
    }
    for kind, status in (("MISSING_AUTHENTICATION_TOKEN", "404"), ("REQUEST_TOO_LARGE", "413")):
        answer = answers[kind]
        assert answer["StatusCode"] == status
        body = json.loads(answer["ResponseTemplates"]["application/json"])
        assert body["Status"] == int(status) and body["Message"]
    for answer in answers.values():
        headers = answer["ResponseParameters"]
        assert headers["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"
    assert {"DEFAULT_4XX", "DEFAULT_5XX"} <= set(answers)


def test_uploads_under_incoming_run_the_ingest_lambda(assertions: Template) -> None:
    assertions.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "NotificationConfiguration": {
                "LambdaFunctionConfigurations": [
                    {
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}
                        },
                        "LambdaFunctionArn": {"Fn::GetAtt": ["IngestUpload", "Arn"]},
                    }
                ]
            }
        },
    )


def test_sweep_runs_every_15_minutes_with_its_invoke_permission(template: dict[str, Any]) -> None:
    function = template["Resources"]["Sweep"]["Properties"]
    assert function["Handler"] == "app.sweep"
    assert function["Timeout"] == 900  # a large study's blobs, beyond the API's 29 s
    (rule_id, rule), *others = resources_of_type(template, "AWS::Events::Rule").items()
    assert not others
    assert rule["Properties"]["ScheduleExpression"] == "rate(15 minutes)"
    assert rule["Properties"]["State"] == "ENABLED"
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["Sweep", "Arn"]}
    permissions = [
        p["Properties"]
        for p in resources_of_type(template, "AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "events.amazonaws.com"
    ]
    assert permissions == [
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Fn::GetAtt": ["Sweep", "Arn"]},
            "Principal": "events.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]},
        }
    ]


def test_functions_log_to_groups_with_a_retention(template: dict[str, Any]) -> None:
    groups = resources_of_type(template, "AWS::Logs::LogGroup").values()
    named = {json.dumps(g["Properties"]["LogGroupName"]) for g in groups}
    for function in APP_FUNCTIONS:
        assert any(f'"Ref": "{function}"' in name for name in named), function
    assert all(g["Properties"]["RetentionInDays"] for g in groups)


def test_cfn_lint_is_clean() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--ignore-checks",
            *CFN_LINT_IGNORED,
            "--",
            str(CDK_OUT / f"{STAGE}.template.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _assert_signed_in_with_cognito(template: dict[str, Any]) -> None:
    """Cognito on every method but OPTIONS and the web app's files (each with its route's
    scope), and the web app's sign-in settings on the API handler."""
    (api,) = resources_of_type(template, "AWS::Serverless::Api").values()
    paths = api["Properties"]["DefinitionBody"]["paths"]
    public = {"/dicom-web/app/client", "/dicom-web/app/client/{file}"}
    for path, methods in paths.items():
        for method, operation in methods.items():
            security = operation.get("security")
            if method == "options" or (path in public and method in ("get", "head")):
                assert security is None, (path, method)
            else:
                assert security and list(security[0]) == ["cognito"], (path, method)
    assert paths["/dicom-web/studies"]["get"]["security"] == [{"cognito": ["dicomweb/read"]}]
    assert paths["/dicom-web/studies"]["post"]["security"] == [{"cognito": ["dicomweb/write"]}]
    handler = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert handler["AUTHORIZER"] == "cognito"
    assert {"WEBAPP_OIDC_AUTHORITY", "WEBAPP_OIDC_CLIENT_ID"} <= set(handler)


def test_stage_signs_in_as_its_authorizer_says(template: dict[str, Any]) -> None:
    """The stage's template carries the authorizer of `AUTHORIZER` or the stage's default
    (`aws` and `prod`: Cognito)."""
    authorizer = stage_authorizer(STAGE, os.environ)
    handler = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert handler["AUTHORIZER"] == authorizer
    if authorizer == "cognito":
        _assert_signed_in_with_cognito(template)


def test_prod_stack_signs_in_and_keeps_delete_off_with_options_given(tmp_path: Path) -> None:
    """A `prod` synth without AUTHORIZER, with options given in DICOMWEB_CONFIG (an OIDC
    issuer alone): signed in with Cognito, and the stage's own options kept beside the
    given ones, so DELETE stays off and no study or series has a DELETE route.
    Synthesized in a process of its own: it packages the app from the repository."""
    given = {"DicomWeb": {"OidcIssuer": "https://idp.example"}}
    env = {
        **os.environ,
        "STAGE": "prod",
        "CDK_OUTDIR": str(tmp_path),
        "DICOMWEB_CONFIG": json.dumps(given),
    }
    env.pop("AUTHORIZER", None)
    result = subprocess.run(
        [sys.executable, "-m", "infra.app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    template = json.loads((tmp_path / "prod.template.json").read_text())
    _assert_signed_in_with_cognito(template)
    (api,) = resources_of_type(template, "AWS::Serverless::Api").values()
    paths = api["Properties"]["DefinitionBody"]["paths"]
    # Every method of a path reaches the app, which answers 405 to one it has no route for:
    # a route's method carries its scope, DELETE of a study none (admin when DELETE is on).
    assert paths["/dicom-web/servers/{name}"]["delete"]["security"] == [
        {"cognito": ["dicomweb/admin"]}
    ]
    for path in ("/dicom-web/studies/{study}", "/dicom-web/studies/{study}/series/{series}"):
        assert paths[path]["delete"]["security"] == [{"cognito": []}], path
    for function in APP_FUNCTIONS:
        env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        options = json.loads(env["DICOMWEB_CONFIG"])["DicomWeb"]
        assert options == {"EnableDelete": False, "OidcIssuer": "https://idp.example"}


def test_every_function_ends_before_its_write_intents_count_as_interrupted(
    template: dict[str, Any],
) -> None:
    """The sweep removes the blobs of write intents older than INTERRUPTED_WRITE_AGE: by then
    no function that stores (or any other) may still run."""
    from chalicelib.ingest import INTERRUPTED_WRITE_AGE

    for name in APP_FUNCTIONS:
        timeout = template["Resources"][name]["Properties"]["Timeout"]
        assert timeout < INTERRUPTED_WRITE_AGE.total_seconds(), name


def test_async_functions_keep_the_events_that_failed_every_retry(
    template: dict[str, Any],
) -> None:
    """S3 (uploads) and EventBridge (the sweep) invoke asynchronously: once Lambda's retries
    are spent the event goes to an encrypted queue kept 14 days, not nowhere."""
    queue_id = logical_id(template, "AWS::SQS::Queue", "FailedEvents")
    queue = template["Resources"][queue_id]["Properties"]
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue["SqsManagedSseEnabled"] is True
    configs = {
        c["Properties"]["FunctionName"]["Ref"]: c
        for c in resources_of_type(template, "AWS::Lambda::EventInvokeConfig").values()
    }
    assert set(configs) == {"IngestUpload", "Sweep"}
    for config in configs.values():
        properties = config["Properties"]
        assert properties["MaximumRetryAttempts"] == 2
        assert properties["DestinationConfig"] == {
            "OnFailure": {"Destination": {"Fn::GetAtt": [queue_id, "Arn"]}}
        }
        assert any(
            d.startswith("UploadIngestRole") or d.startswith("SweepRole")
            for d in config["DependsOn"]
        )


def test_alarms_notify_the_alarm_topic(template: dict[str, Any]) -> None:
    """A failed event, the errors of a function no retry covers, a failed jobs execution and
    the API's 5xx each raise an alarm on the topic; the API 5xx alarm names this stack's API
    (its OpenAPI title). The jobs worker's errors raise none: it raises TransientJobError on
    purpose for the state machine's retries (a peer briefly down)."""
    topic = logical_id(template, "AWS::SNS::Topic", "AlarmTopic")
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm").values()
    watched: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for alarm in alarms:
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == [{"Ref": topic}]
        assert properties["Threshold"] == 1
        metric = watched.setdefault((properties["Namespace"], properties["MetricName"]), [])
        metric.append({d["Name"]: d["Value"] for d in properties["Dimensions"]})
    functions = [d["FunctionName"] for d in watched["AWS/Lambda", "Errors"]]
    retried = ("APIHandler", "IngestUpload", "Sweep")
    assert sorted(functions, key=str) == sorted(({"Ref": f} for f in retried), key=str)
    (machine,) = watched["AWS/States", "ExecutionsFailed"]
    jobs = logical_id(template, "AWS::StepFunctions::StateMachine", "Jobs")
    assert machine == {"StateMachineArn": {"Ref": jobs}}
    (queue,) = watched["AWS/SQS", "ApproximateNumberOfMessagesVisible"]
    assert queue["QueueName"]["Fn::GetAtt"][0].startswith("FailedEvents")
    (api,) = watched["AWS/ApiGateway", "5XXError"]
    (rest_api,) = resources_of_type(template, "AWS::Serverless::Api").values()
    title = rest_api["Properties"]["DefinitionBody"]["info"]["title"]
    assert api == {"ApiName": title, "Stage": "api"} and title == f"dicomweb-{STAGE}"


def test_jobs_worker_is_not_bound_by_the_api_s_29_seconds(template: dict[str, Any]) -> None:
    """A job step fetches and stores a whole series (chalicelib/jobs.py) under Step Functions,
    not API Gateway: the worker has Lambda's longest timeout, the API handler API Gateway's
    29 s at most (a longer run would be answered 504 and go on for nothing)."""
    functions = template["Resources"]
    assert functions["JobsWorker"]["Properties"]["Timeout"] == 900
    assert functions["APIHandler"]["Properties"]["Timeout"] <= 29


def test_jobs_steps_retry_lambda_s_transient_errors_and_record_every_failure(
    package_dir: Path,
) -> None:
    """`infra/jobs.asl.json` against the code and Step Functions' guidance ("Handle Lambda
    service exceptions"): RunStep retries the worker's TransientJobError and Lambda's
    transient service errors; anything else (a timeout or out of memory is Lambda.Unknown)
    goes to MarkFailed, which records it on the job, retried on any error."""
    from chalicelib.jobs import TransientJobError

    states = json.loads((ROOT / "infra" / "jobs.asl.json").read_text())["States"]
    tasks = {name for name, state in states.items() if state["Type"] == "Task"}
    assert tasks == {"RunStep", "MarkFailed"}
    (retry,) = states["RunStep"]["Retry"]
    assert {TransientJobError.__name__, *LAMBDA_TRANSIENT_ERRORS} <= set(retry["ErrorEquals"])
    assert states["RunStep"]["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.Failure", "Next": "MarkFailed"}
    ]
    (retry,) = states["MarkFailed"]["Retry"]
    assert retry["ErrorEquals"] == ["States.ALL"] and retry["MaxAttempts"] >= 2
    assert states[states["MarkFailed"]["Next"]]["Type"] == "Fail"


def test_api_sends_every_route_of_the_table_to_the_handler(
    template: dict[str, Any], package_dir: Path
) -> None:
    """API Gateway answers a path and method it does not know itself (403, which we map to
    404): every route of the app's table on the stage's settings (HEAD beside GET) is in
    the API's OpenAPI body, as a Lambda proxy integration of the API handler."""
    from chalicelib.config import load_settings
    from chalicelib.server.api import build_route_table

    env = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    settings = load_settings({"DICOMWEB_CONFIG": env["DICOMWEB_CONFIG"]})
    table = build_route_table(settings)
    (api,) = resources_of_type(template, "AWS::Serverless::Api").values()
    paths = api["Properties"]["DefinitionBody"]["paths"]
    calls = [(route, m) for route, handlers in table.routes.items() for m in handlers]
    calls += [(route, "HEAD") for route, handlers in table.routes.items() if "GET" in handlers]
    assert len(calls) > 50
    for route, method in calls:
        integration = paths[route][method.lower()]["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy", (route, method)
        assert "${APIHandler.Arn}" in integration["uri"]["Fn::Sub"], (route, method)
