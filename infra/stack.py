"""The one stack of a deployment: storage, index, the Chalice app and what ties them together.

Resources, by construct id:
- `Blobs`: the S3 bucket (SSE-S3, public access blocked, TLS only; `tmp/` answers,
  `incoming/` uploads and `uploads/` results expire; CORS for browsers that follow a 303 or
  PUT an upload);
- `Index`: the DynamoDB table with the GSIs of `chalicelib/storage/dynamo/table.py`
  (`table_definition`), on demand, point-in-time recovery;
- `Api`: the Chalice app (`chalice.cdk`), packaged with Python 3.12 and precompiled
  (`infra/packaging.py`): the API handler, the upload ingest Lambda, the jobs worker and the
  sweep;
- `Jobs`: the state machine of `infra/jobs.asl.json`, its task the jobs worker;
- `SweepSchedule`: the EventBridge rule that runs the sweep every `SWEEP_SCHEDULE` (the blobs
  of deletes interrupted after their index commit and the derived documents of deleted
  resources, the blobs of stores interrupted before their index commit, jobs whose execution
  ended unrecorded);
- one role per Lambda with exactly the S3, DynamoDB, Step Functions and Secrets Manager actions
  its code calls, on this stack's resources only; log groups with a retention;
- API Gateway's own answers mapped to ours: unknown path 404, body too large 413, JSON + CORS;
- `FailedEvents`: the SQS queue (SSE, 14 days) of asynchronous invocations (S3's upload
  events, the sweep) that failed every retry, which Lambda would otherwise drop;
- `AlarmTopic`: the SNS topic of the alarms (an event in `FailedEvents`, an error of the API
  handler, the upload ingest or the sweep, a failed jobs execution, the API's 5xx answers).

A stage that keeps its data (`infra/stages.py`: `aws`, `prod`) keeps the bucket and table when
the stack is deleted and turns on the table's deletion protection; `dev` deletes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from chalice.cdk import Chalice
from constructs import Construct

from chalicelib.server.delivery import TMP_PREFIX
from chalicelib.server.uploads import INCOMING_PREFIX, UPLOADS_PREFIX
from chalicelib.storage.dynamo import table_definition
from infra import packaging
from infra.auth import PACKAGING_POOL_ARN, CognitoSignIn, stage_authorizer
from infra.stages import KEEPS_DATA, SIGN_IN_DOMAIN_PREFIXES, STAGES, deployed_options

ROOT = packaging.ROOT


LOG_RETENTION = logs.RetentionDays.ONE_MONTH
API_STAGE = "api"
"""The API Gateway stage of every stage (`api_gateway_stage` in .chalice/config.json)."""
ASYNC_RETRIES = 2
"""Lambda's retries of an asynchronous invocation (its default, stated): then the event goes
to the `FailedEvents` queue."""
FAILED_EVENTS_RETENTION = cdk.Duration.days(14)
"""SQS's longest: the failed event of an upload outlives its `incoming/` object (7 days)."""
SWEEP_SCHEDULE = cdk.Duration.minutes(15)
"""How often the sweep runs: the longest an interrupted delete's blobs outlive it."""

# The boto3 calls of chalicelib/storage/s3.py and dynamo/, as IAM actions. HeadObject is
# s3:GetObject; DeleteObjects is s3:DeleteObject; list_objects_v2 is s3:ListBucket (which also
# makes HeadObject answer 404, not 403, for a missing key).
S3_OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
S3_BUCKET_ACTIONS = ["s3:ListBucket"]
# TransactWriteItems is authorized on the actions it holds (Put, Update, Delete): there is no
# IAM action of that name. Scan: index.iter_studies, which finds the studies of Orthanc IDs
# named in a call to a remote server (client/resources.py).
DYNAMODB_ACTIONS = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
]

# chalicelib/storage/jobs_aws.py: start_execution on the state machine (the API handler, and
# the jobs worker when a long job goes on in a new execution), stop_execution on its
# executions.
STATES_MACHINE_ACTIONS = ["states:StartExecution"]
STATES_EXECUTION_ACTIONS = ["states:StopExecution"]

# chalicelib/storage/secrets.py: remote servers' secrets, named `{TABLE}/...`; the jobs worker
# only reads them (to call those servers).
SECRETS_API_ACTIONS = [
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:GetSecretValue",
    "secretsmanager:DeleteSecret",
]
SECRETS_WORKER_ACTIONS = ["secretsmanager:GetSecretValue"]

# app.sweep: server/delete.finish_pending_deletes Queries the pending deletes, deletes their
# blobs and folders (list_objects_v2 is s3:ListBucket), takes the removed keys out of the
# pending items (UpdateItem) and drops emptied ones; ingest.remove_interrupted_writes Queries
# the write intents, reads each one's instance item (GetItem), deletes the blobs it does not
# point to and the intents (BatchWriteItem); jobs.fail_abandoned Queries the jobs, asks for
# the status of a Running job's execution and saves the job (PutItem, GetItem on a conflict),
# which may delete finished jobs past JobsHistorySize (DeleteItem, their blobs DeleteObject),
# as jobs.forget_old_jobs does after it (those the grace of a recent end kept).
SWEEP_S3_OBJECT_ACTIONS = ["s3:DeleteObject"]
SWEEP_DYNAMODB_ACTIONS = [
    "dynamodb:Query",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
]
SWEEP_STATES_EXECUTION_ACTIONS = ["states:DescribeExecution"]

NOT_FOUND_BODY = {
    "Status": 404,
    "Message": "no such resource: $context.path (the DICOMweb root is /dicom-web)",
}
TOO_LARGE_BODY = {
    "Status": 413,
    "Message": (
        "the request body is over API Gateway's 10 MB: store large studies through "
        "POST /dicom-web/uploads (presigned uploads), or send fewer instances per request"
    ),
}


class PackagedChalice(Chalice):
    """`chalice.cdk.Chalice` whose package is made by `infra/packaging.py`: Python 3.12,
    failing on a dependency without a Lambda wheel, with precompiled `.pyc`."""

    def _package_app(self) -> None:
        packaging.package(Path(self._sam_package_dir), self.stage_name, self.stage_config)


class DicomWebStack(cdk.Stack):
    def __init__(self, scope: Construct, stage: str, **kwargs: Any) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
        # chalice.cdk takes the Chalice stage (.chalice/config.json) from the construct path:
        # the stack's id is the stage, its CloudFormation name says what it is.
        super().__init__(scope, stage, stack_name=f"dicomweb-{stage}", **kwargs)
        keep = KEEPS_DATA[stage]
        removal = cdk.RemovalPolicy.RETAIN if keep else cdk.RemovalPolicy.DESTROY

        self.blobs = self._bucket(removal, auto_delete=not keep)
        self.index = self._table(removal, deletion_protection=keep)
        self.api_role = self._lambda_role("ApiHandlerRole", "the DICOMweb API handler")
        self.ingest_role = self._lambda_role("UploadIngestRole", "the upload ingest Lambda")
        self.worker_role = self._lambda_role("JobsWorkerRole", "the jobs worker Lambda")
        self.sweep_role = self._lambda_role("SweepRole", "the scheduled sweep Lambda")
        for role in (self.api_role, self.ingest_role, self.worker_role):
            self._grant_storage(role)
        self._grant_sweep(self.sweep_role)
        self._grant_secrets(self.api_role, SECRETS_API_ACTIONS)
        self._grant_secrets(self.worker_role, SECRETS_WORKER_ACTIONS)

        environment = {
            "BACKEND": "aws",
            "BUCKET": self.blobs.bucket_name,
            "TABLE": self.index.table_name,
        }
        self.sign_in = self._authorizer(stage, removal, environment)
        self.api = PackagedChalice(
            self,
            "Api",
            source_dir=str(ROOT),
            stage_config={
                "environment_variables": environment,
                "manage_iam_role": False,
                "iam_role_arn": self.api_role.role_arn,
            },
        )
        # The REST API is named after the stack (the title of its OpenAPI body): Chalice names
        # it after the app, the same for every stage of an account, whose API metrics (by API
        # name) would then be mixed.
        self.api.get_resource("RestAPI").add_property_override(
            "DefinitionBody.info.title", self.stack_name
        )
        # Chalice's per-function settings are read from the stage on disk only: set the
        # other Lambdas' own roles on the packaged template.
        for function, role in (
            ("IngestUpload", self.ingest_role),
            ("JobsWorker", self.worker_role),
            ("Sweep", self.sweep_role),
        ):
            self.api.get_resource(function).add_property_override("Role", role.role_arn)
        self._log_groups(
            {
                "APIHandler": self.api_role,
                "IngestUpload": self.ingest_role,
                "JobsWorker": self.worker_role,
                "Sweep": self.sweep_role,
            }
        )
        self.jobs = self._jobs_state_machine()
        self._ingest_uploads()
        self._sweep_schedule()
        self.failed_events = self._failed_events(
            {"IngestUpload": self.ingest_role, "Sweep": self.sweep_role}
        )
        self.alarms = self._alarms()
        self._gateway_responses()
        if self.sign_in is not None:
            self.sign_in.protect(self.api.get_resource("RestAPI"))
            self._web_app_sign_in(self.sign_in)
        self._outputs()

    def _web_app_sign_in(self, sign_in: CognitoSignIn) -> None:
        """The web app signs in with the viewer client: the API handler fills its page with
        these. They are set on the packaged function, not in the stage's environment, because
        `chalice package` loads the app with that environment and the app validates the
        authority, a CloudFormation token then. The app's own URL cannot be a callback URL of
        the client here (the client would depend on the API, whose handler depends on the
        client's id): README "Deploying" says how to add it."""
        authority = f"https://cognito-idp.{self.region}.amazonaws.com/{sign_in.pool.user_pool_id}"
        self.api.add_environment_variable("WEBAPP_OIDC_AUTHORITY", authority, "APIHandler")
        self.api.add_environment_variable(
            "WEBAPP_OIDC_CLIENT_ID", sign_in.viewer_client.user_pool_client_id, "APIHandler"
        )

    def _authorizer(
        self, stage: str, removal: cdk.RemovalPolicy, environment: dict[str, str]
    ) -> CognitoSignIn | None:
        """The API Gateway authorizer of `AUTHORIZER` (none | cognito | oidc | iam), as
        `chalice package` writes it from the app's settings (server/api.py); the Lambdas get
        the same setting to enforce the routes' scopes, and the stage's `DICOMWEB_CONFIG` with
        the one given merged over it (the OIDC issuer and audience live there). `cognito`
        makes the user pool here."""
        authorizer = stage_authorizer(stage, os.environ)
        # The app is packaged in this process and gives its routes the authorizer it reads.
        os.environ["AUTHORIZER"] = environment["AUTHORIZER"] = authorizer
        environment["DICOMWEB_CONFIG"] = deployed_options(stage, os.environ)
        if authorizer != "cognito":
            return None
        sign_in = CognitoSignIn(
            self,
            "SignIn",
            domain_prefix=os.environ.get("COGNITO_DOMAIN_PREFIX") or SIGN_IN_DOMAIN_PREFIXES[stage],
            viewer_urls=[u for u in os.environ.get("VIEWER_URLS", "").split(",") if u]
            or ["http://localhost:3000/callback"],
            removal=removal,
        )
        # The app is packaged in this process before the pool exists: it sees a placeholder,
        # which `protect` replaces in the template; the Lambdas get the real ARN.
        os.environ["COGNITO_USER_POOL_ARN"] = PACKAGING_POOL_ARN
        environment["COGNITO_USER_POOL_ARN"] = sign_in.pool.user_pool_arn
        return sign_in

    def _bucket(self, removal: cdk.RemovalPolicy, auto_delete: bool) -> s3.Bucket:
        return s3.Bucket(
            self,
            "Blobs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            removal_policy=removal,
            auto_delete_objects=auto_delete,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireLargeAnswers", prefix=TMP_PREFIX, expiration=cdk.Duration.days(1)
                ),
                s3.LifecycleRule(
                    id="ExpireUploads", prefix=INCOMING_PREFIX, expiration=cdk.Duration.days(7)
                ),
                s3.LifecycleRule(
                    id="ExpireUploadResults",
                    prefix=UPLOADS_PREFIX,
                    expiration=cdk.Duration.days(7),
                ),
                s3.LifecycleRule(
                    id="AbortMultipartUploads",
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
            ],
            # Browsers follow a 303 to a presigned GET and PUT uploads to presigned URLs.
            cors=[
                s3.CorsRule(
                    allowed_methods=[s3.HttpMethods.GET, s3.HttpMethods.HEAD, s3.HttpMethods.PUT],
                    allowed_origins=["*"],
                    allowed_headers=["*"],
                    exposed_headers=["ETag", "Content-Length", "Content-Type"],
                    max_age=600,
                )
            ],
        )

    def _table(self, removal: cdk.RemovalPolicy, deletion_protection: bool) -> dynamodb.Table:
        definition = table_definition()
        keys = {k["KeyType"]: k["AttributeName"] for k in definition["KeySchema"]}
        table = dynamodb.Table(
            self,
            "Index",
            partition_key=_attribute(keys["HASH"]),
            sort_key=_attribute(keys["RANGE"]),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=deletion_protection,
            removal_policy=removal,
        )
        for index in definition["GlobalSecondaryIndexes"]:
            index_keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
            table.add_global_secondary_index(
                index_name=index["IndexName"],
                partition_key=_attribute(index_keys["HASH"]),
                sort_key=_attribute(index_keys["RANGE"]) if "RANGE" in index_keys else None,
                projection_type=dynamodb.ProjectionType[index["Projection"]["ProjectionType"]],
                non_key_attributes=index["Projection"].get("NonKeyAttributes"),
            )
        return table

    def _lambda_role(self, construct_id: str, what: str) -> iam.Role:
        return iam.Role(
            self,
            construct_id,
            description=f"Runs {what}: this stack's bucket and table, its own log group",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )

    def _grant_storage(self, role: iam.Role) -> None:
        role.add_to_policy(
            iam.PolicyStatement(
                actions=S3_OBJECT_ACTIONS, resources=[self.blobs.arn_for_objects("*")]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=S3_BUCKET_ACTIONS, resources=[self.blobs.bucket_arn])
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=DYNAMODB_ACTIONS,
                resources=[self.index.table_arn, f"{self.index.table_arn}/index/*"],
            )
        )

    def _grant_sweep(self, role: iam.Role) -> None:
        """What finishing pending deletes and interrupted stores calls: no read of a blob, no
        GSI."""
        role.add_to_policy(
            iam.PolicyStatement(
                actions=SWEEP_S3_OBJECT_ACTIONS, resources=[self.blobs.arn_for_objects("*")]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=S3_BUCKET_ACTIONS, resources=[self.blobs.bucket_arn])
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=SWEEP_DYNAMODB_ACTIONS, resources=[self.index.table_arn])
        )

    def _grant_secrets(self, role: iam.Role, actions: list[str]) -> None:
        secrets = self.format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=f"{self.index.table_name}/*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(iam.PolicyStatement(actions=actions, resources=[secrets]))

    def _log_groups(self, functions: dict[str, iam.Role]) -> None:
        """A log group per function, with a retention, that only its function writes to.

        Made here, not by Chalice's `log_retention_in_days`, whose packaged template names a
        resource that does not exist (aws/chalice#2079). The write permission is a policy of
        its own: in the role's policy it would make the function depend on its log group,
        which depends on the function's name.
        """
        for logical_id, role in functions.items():
            function_name = self.api.get_resource(logical_id).ref
            group = logs.LogGroup(
                self,
                f"{logical_id}Logs",
                log_group_name=f"/aws/lambda/{function_name}",
                retention=LOG_RETENTION,
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            iam.Policy(
                self,
                f"{logical_id}LogWriter",
                roles=[role],
                statements=[
                    iam.PolicyStatement(
                        actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                        resources=[group.log_group_arn],
                    )
                ],
            )

    def _jobs_state_machine(self) -> sfn.StateMachine:
        """`infra/jobs.asl.json` with the jobs worker as its task; the API handler starts
        and stops its executions, the worker starts the next one of a long job, and the sweep
        asks for their status (JOBS_STATE_MACHINE_ARN, not on the worker: it would make the
        worker depend on the state machine that invokes it; the worker starts the machine of
        the execution that invoked it)."""
        worker = self._imported_function("JobsWorker")
        machine = sfn.StateMachine(
            self,
            "Jobs",
            definition_body=sfn.DefinitionBody.from_file(str(ROOT / "infra" / "jobs.asl.json")),
            definition_substitutions={"JobsWorkerArn": worker.function_arn},
        )
        worker.grant_invoke(machine)
        executions = self.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{machine.state_machine_name}:*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        for function, role, machine_actions, execution_actions in (
            ("APIHandler", self.api_role, STATES_MACHINE_ACTIONS, STATES_EXECUTION_ACTIONS),
            ("Sweep", self.sweep_role, [], SWEEP_STATES_EXECUTION_ACTIONS),
        ):
            self.api.add_environment_variable(
                "JOBS_STATE_MACHINE_ARN", machine.state_machine_arn, function
            )
            if machine_actions:
                role.add_to_policy(
                    iam.PolicyStatement(
                        actions=machine_actions, resources=[machine.state_machine_arn]
                    )
                )
            role.add_to_policy(
                iam.PolicyStatement(actions=execution_actions, resources=[executions])
            )
        # The worker starts a fresh execution of a long job (chalicelib/jobs.py,
        # _continue_as_new): a policy of its own, since in the role's policy the machine's
        # ARN would make the worker depend on the state machine that invokes it.
        iam.Policy(
            self,
            "JobsWorkerContinues",
            roles=[self.worker_role],
            statements=[
                iam.PolicyStatement(
                    actions=STATES_MACHINE_ACTIONS, resources=[machine.state_machine_arn]
                )
            ],
        )
        return machine

    def _imported_function(self, logical_id: str) -> lambda_.IFunction:
        """A function of the packaged template as a CDK function (grants, permissions)."""
        return lambda_.Function.from_function_attributes(
            self,
            f"{logical_id}Function",
            function_arn=self.api.get_resource(logical_id).get_att("Arn").to_string(),
            same_environment=True,
        )

    def _ingest_uploads(self) -> None:
        """S3 ObjectCreated under `incoming/` runs the ingest Lambda (server/uploads.py)."""
        self.blobs.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self._imported_function("IngestUpload")),
            s3.NotificationKeyFilter(prefix=INCOMING_PREFIX),
        )

    def _sweep_schedule(self) -> None:
        """An EventBridge rule that runs the sweep (app.sweep) every SWEEP_SCHEDULE, with its
        invoke permission. Here rather than Chalice's `app.schedule`, whose rule and permission
        SAM would make only at deploy: in this template the infra tests check them."""
        events.Rule(
            self,
            "SweepSchedule",
            description="Finish DICOMweb deletes interrupted after their index commit",
            schedule=events.Schedule.rate(SWEEP_SCHEDULE),
            targets=[events_targets.LambdaFunction(self._imported_function("Sweep"))],
        )

    def _failed_events(self, functions: dict[str, iam.Role]) -> sqs.Queue:
        """The queue that keeps an asynchronous invocation (S3's upload events, EventBridge's
        sweep) that failed ASYNC_RETRIES + 1 times: without it Lambda drops the event, and an
        upload whose ingest crashed or timed out would be lost without a trace. Each function
        sends its own failures (its role, SendMessage on this queue only)."""
        queue = sqs.Queue(
            self,
            "FailedEvents",
            retention_period=FAILED_EVENTS_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        for logical_id, role in functions.items():
            role.add_to_policy(
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[queue.queue_arn])
            )
            on_failure = lambda_.CfnEventInvokeConfig(
                self,
                f"{logical_id}OnFailure",
                function_name=self.api.get_resource(logical_id).ref,
                qualifier="$LATEST",
                maximum_retry_attempts=ASYNC_RETRIES,
                destination_config=lambda_.CfnEventInvokeConfig.DestinationConfigProperty(
                    on_failure=lambda_.CfnEventInvokeConfig.OnFailureProperty(
                        destination=queue.queue_arn
                    )
                ),
            )
            # Lambda checks the role may send to the destination when the config is made.
            on_failure.node.add_dependency(role)
        return queue

    def _alarms(self) -> sns.Topic:
        """Alarms on what needs an operator, notifying the `AlarmTopic` (subscribe to it):
        an event in `FailedEvents`; an error of the API handler, the upload ingest or the
        sweep (a crash, a timeout, out of memory: the app answers its own errors, so an API
        error here is not a 4xx or a 500 it wrote); a failed execution of the jobs state
        machine (not the worker's errors: it raises TransientJobError on purpose, for the
        state machine's retries while a peer is briefly down; a step that crashed, timed out
        or ran out of retries ends its execution failed); and the API's 5xx answers (the
        app's 500s and API Gateway's own, a 504 at 29 s)."""
        topic = sns.Topic(self, "AlarmTopic", display_name="DICOMweb alarms")
        notify = cloudwatch_actions.SnsAction(topic)
        five_minutes = cdk.Duration.minutes(5)
        metrics = {
            "FailedEventsAlarm": (
                self.failed_events.metric_approximate_number_of_messages_visible(
                    period=five_minutes, statistic="Maximum"
                ),
                "an asynchronous invocation failed every retry: its event is in FailedEvents",
            ),
            "ApiErrorsAlarm": (
                cloudwatch.Metric(
                    namespace="AWS/ApiGateway",
                    metric_name="5XXError",
                    dimensions_map={"ApiName": self.stack_name, "Stage": API_STAGE},
                    period=five_minutes,
                    statistic="Sum",
                ),
                "the API answered 5xx",
            ),
            "JobsFailedAlarm": (
                self.jobs.metric_failed(period=five_minutes, statistic="Sum"),
                "a jobs execution failed: a step crashed, timed out or ran out of retries "
                "(its job records the failure)",
            ),
        }
        for logical_id in ("APIHandler", "IngestUpload", "Sweep"):
            metrics[f"{logical_id}ErrorsAlarm"] = (
                cloudwatch.Metric(
                    namespace="AWS/Lambda",
                    metric_name="Errors",
                    dimensions_map={"FunctionName": self.api.get_resource(logical_id).ref},
                    period=five_minutes,
                    statistic="Sum",
                ),
                f"the {logical_id} function failed (crash, timeout or out of memory)",
            )
        for construct_id, (metric, description) in metrics.items():
            alarm = metric.create_alarm(
                self,
                construct_id,
                alarm_description=description,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(notify)
        return topic

    def _gateway_responses(self) -> None:
        """API Gateway's own answers in our shape: JSON `{Status, Message}` with CORS."""
        rest_api_id = self.api.get_resource("RestAPI").ref
        cors = {
            "gatewayresponse.header.Access-Control-Allow-Origin": "'*'",
            "gatewayresponse.header.Access-Control-Allow-Headers": "'*'",
        }
        for construct_id, response_type, status, body in (
            # Chalice has no catch-all route; API Gateway answers unknown paths 403.
            ("UnknownPathIs404", "MISSING_AUTHENTICATION_TOKEN", "404", NOT_FOUND_BODY),
            ("BodyTooLargeIs413", "REQUEST_TOO_LARGE", "413", TOO_LARGE_BODY),
            ("Default4xxWithCors", "DEFAULT_4XX", None, None),
            ("Default5xxWithCors", "DEFAULT_5XX", None, None),
        ):
            template = (
                json.dumps(body)
                if body
                else '{"Error": "$context.error.responseType", '
                '"Message": $context.error.messageString}'
            )
            apigateway.CfnGatewayResponse(
                self,
                construct_id,
                rest_api_id=rest_api_id,
                response_type=response_type,
                status_code=status,
                response_parameters=cors,
                response_templates={"application/json": template},
            )

    def _outputs(self) -> None:
        rest_api_id = self.api.get_resource("RestAPI").ref
        cdk.CfnOutput(
            self,
            "DicomWebRoot",
            description="The DICOMweb root: point OHIF or dicomweb-client here",
            value=f"https://{rest_api_id}.execute-api.{self.region}.{self.url_suffix}"
            f"/{API_STAGE}/dicom-web",
        )
        if self.sign_in is not None:
            cdk.CfnOutput(self, "UserPoolId", value=self.sign_in.pool.user_pool_id)
            cdk.CfnOutput(
                self,
                "ViewerClientId",
                description="OHIF's oidc client_id",
                value=self.sign_in.viewer_client.user_pool_client_id,
            )
            cdk.CfnOutput(self, "SignInDomain", value=self.sign_in.domain.base_url())
        cdk.CfnOutput(
            self,
            "AlarmTopicArn",
            description="subscribe to be told of failed uploads, function errors and API 5xx",
            value=self.alarms.topic_arn,
        )
        cdk.CfnOutput(
            self,
            "FailedEventsQueueUrl",
            description="asynchronous invocations that failed every retry, kept 14 days",
            value=self.failed_events.queue_url,
        )
        cdk.CfnOutput(self, "BucketName", value=self.blobs.bucket_name)
        cdk.CfnOutput(self, "TableName", value=self.index.table_name)
        cdk.CfnOutput(
            self,
            "ApiHandlerRoleArn",
            description="iam_role_arn for a Chalice stage deployed onto this stack's resources",
            value=self.api_role.role_arn,
        )


def _attribute(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)
