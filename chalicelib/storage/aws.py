"""What the AWS adapters share about botocore errors."""

from __future__ import annotations

from botocore.exceptions import ClientError


def error_code(error: ClientError) -> str:
    """The AWS error code of a failed call ("NoSuchKey", "ConditionalCheckFailedException")."""
    return error.response.get("Error", {}).get("Code", "")
