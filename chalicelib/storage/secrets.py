"""SecretStore adapters: a 0600 file locally, AWS Secrets Manager on AWS.

Neither logs or raises a message holding a secret's value: errors name the secret only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from chalicelib.storage.ports import NotFound


class FileSecretStore:
    """Secrets in one JSON file readable by its owner only (mode 0600, written atomically)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _write(self, secrets: dict[str, Any]) -> None:
        temporary = self._path.with_name(self._path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)  # an older file left with wider rights
            json.dump(secrets, out)
        os.replace(temporary, self._path)

    def put_secret(self, name: str, value: dict[str, Any]) -> str:
        with self._lock:
            secrets = self._read()
            secrets[name] = value
            self._write(secrets)
        return name

    def get_secret(self, reference: str) -> dict[str, Any]:
        with self._lock:
            secrets = self._read()
        if reference not in secrets:
            raise NotFound(f"secret {reference!r} not found in {self._path.name}")
        return secrets[reference]

    def delete_secret(self, name: str) -> None:
        with self._lock:
            secrets = self._read()
            if secrets.pop(name, None) is not None:
                self._write(secrets)


class _WithoutSecretStrings(logging.Filter):
    """botocore logs every call's parameters and every response body at DEBUG: drop the
    records of Secrets Manager calls, which hold the secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SecretString" not in record.getMessage()


_WITHOUT_SECRET_STRINGS = _WithoutSecretStrings()


class SecretsManagerStore:
    """Secrets in AWS Secrets Manager, one secret per name under `prefix`; the reference is
    the secret's ARN."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        for name in ("botocore.endpoint", "botocore.parsers"):
            logging.getLogger(name).addFilter(_WITHOUT_SECRET_STRINGS)

    def put_secret(self, name: str, value: dict[str, Any]) -> str:
        text = json.dumps(value)
        errors = self._client.exceptions
        try:
            answer = self._client.create_secret(Name=self._prefix + name, SecretString=text)
        except errors.ResourceExistsException:
            answer = self._client.put_secret_value(SecretId=self._prefix + name, SecretString=text)
        return answer["ARN"]

    def get_secret(self, reference: str) -> dict[str, Any]:
        try:
            answer = self._client.get_secret_value(SecretId=reference)
        except self._client.exceptions.ResourceNotFoundException:
            raise NotFound(f"secret {reference} not found in Secrets Manager") from None
        return json.loads(answer["SecretString"])

    def delete_secret(self, name: str) -> None:
        with contextlib.suppress(self._client.exceptions.ResourceNotFoundException):
            self._client.delete_secret(
                SecretId=self._prefix + name, ForceDeleteWithoutRecovery=True
            )
