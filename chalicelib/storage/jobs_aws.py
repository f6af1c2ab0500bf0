"""Jobs on AWS: the JobStore in the index's DynamoDB table, and the Step Functions runner.

Items (no new index): every job under partition key `pk`="JOBS", sort key `sk`="JOB#{id}",
with `version` (number, the condition of every write), `creation_time` (string) and
`document` (the JobRecord as JSON, a few KB: resources are kept as UIDs, and the retrieve's
list of stored instance ids grows by ~45 bytes per instance, so about 8,000 instances fit the
400 KB item limit). `list` is one Query on that partition.

The runner starts one execution of the state machine (`infra/jobs.asl.json`, ARN from env
`JOBS_STATE_MACHINE_ARN`, or on the jobs worker, which has no such variable, the machine of
the job's current execution) per start, resume, resubmit and continuation after
`JobsStepsPerExecution` steps, with input `{"JobId": ...}` only;
stop ends it (`StopExecution`); `is_running` asks for the status of the job's execution
(`DescribeExecution`).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.storage.aws import error_code
from chalicelib.storage.ports import Conflict, JobRecord, NotFound, OutOfResources

PARTITION = "JOBS"
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}


def _key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": PARTITION}, "sk": {"S": f"JOB#{job_id}"}}


class DynamoJobStore:
    """JobStore on DynamoDB; shares the index table (its items never look like the index's)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _put(self, job: JobRecord, condition: str, values: dict[str, Any]) -> None:
        item = {
            **_key(job.id),
            "version": {"N": str(job.version)},
            "creation_time": {"S": job.creation_time},
            "document": {"S": json.dumps(dataclasses.asdict(job), separators=(",", ":"))},
        }
        options: dict[str, Any] = {"ConditionExpression": condition}
        if values:
            options["ExpressionAttributeValues"] = values
        try:
            self._client.put_item(TableName=self._table, Item=item, **options)
        except ClientError as e:
            if error_code(e) in _THROTTLED:
                raise OutOfResources(f"DynamoDB is throttling job writes ({error_code(e)})") from e
            if error_code(e) == "ConditionalCheckFailedException":
                raise Conflict(f"job {job.id} exists or was changed meanwhile") from e
            raise

    def create(self, job: JobRecord) -> None:
        self._put(dataclasses.replace(job, version=0), "attribute_not_exists(sk)", {})

    def get(self, job_id: str) -> JobRecord:
        item = self._client.get_item(
            TableName=self._table, Key=_key(job_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            raise NotFound(f"job {job_id} not found")
        return JobRecord(**json.loads(item["document"]["S"]))

    def list(self) -> list[JobRecord]:
        jobs: list[JobRecord] = []
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": PARTITION}, ":prefix": {"S": "JOB#"}},
            "ConsistentRead": True,
        }
        while True:
            response = self._client.query(**params)
            jobs += [JobRecord(**json.loads(i["document"]["S"])) for i in response["Items"]]
            if "LastEvaluatedKey" not in response:
                break
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return sorted(jobs, key=lambda j: (j.creation_time, j.id))

    def save(self, job: JobRecord) -> JobRecord:
        saved = dataclasses.replace(job, version=job.version + 1)
        try:
            self._put(
                saved, "attribute_exists(sk) AND version = :v", {":v": {"N": str(job.version)}}
            )
        except Conflict:
            self.get(job.id)  # NotFound when gone
            raise
        return saved

    def delete(self, job: JobRecord) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=_key(job.id),
                ConditionExpression="version = :v",
                ExpressionAttributeValues={":v": {"N": str(job.version)}},
            )
        except ClientError as e:
            if error_code(e) in _THROTTLED:
                raise OutOfResources(f"DynamoDB is throttling job writes ({error_code(e)})") from e
            if error_code(e) != "ConditionalCheckFailedException":
                raise
            self.get(job.id)  # NotFound when gone
            raise Conflict(f"job {job.id} was changed meanwhile") from e


class StepFunctionsJobRunner:
    """Runs a job as one execution of the jobs state machine."""

    def __init__(self, region: str, state_machine_arn: str, client: Any = None) -> None:
        self._region = region
        self._arn = state_machine_arn
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("stepfunctions", region_name=self._region)
        return self._client

    def start(self, job: JobRecord) -> str:
        machine = self._arn or _state_machine_of(job.execution)
        if not machine:
            raise RuntimeError("JOBS_STATE_MACHINE_ARN is not set: jobs cannot run on AWS")
        response = self.client.start_execution(
            stateMachineArn=machine,
            name=f"{job.id}-{uuid.uuid4().hex[:8]}",
            input=json.dumps({"JobId": job.id}),
        )
        return str(response["executionArn"])

    def is_running(self, job: JobRecord) -> bool:
        """Whether the job's execution (`job.execution`, saved by every start) still runs.
        DescribeExecution, unlike ListExecutions, is not eventually consistent: an execution
        started a moment ago is seen. A job with no execution recorded yet counts as running."""
        if not job.execution:
            return True
        try:
            response = self.client.describe_execution(executionArn=job.execution)
        except self.client.exceptions.ExecutionDoesNotExist:
            return False
        return response["status"] == "RUNNING"

    def stop(self, job: JobRecord) -> None:
        if not job.execution:
            return
        try:
            self.client.stop_execution(executionArn=job.execution, cause=f"job {job.state}")
        except ClientError as e:
            if error_code(e) not in ("ExecutionDoesNotExist", "ExecutionAlreadyFinished"):
                raise


def _state_machine_of(execution_arn: str) -> str:
    """The state machine of a Standard execution: arn:aws:states:{region}:{account}:
    execution:{machine}:{name} → arn:aws:states:{region}:{account}:stateMachine:{machine};
    "" for anything else."""
    parts = execution_arn.split(":")
    if len(parts) != 8 or parts[5] != "execution":
        return ""
    return ":".join([*parts[:5], "stateMachine", parts[6]])
