"""SecretStore contract on both adapters: a 0600 file, and Secrets Manager on moto."""

from __future__ import annotations

import stat
from pathlib import Path

import boto3
import pytest

from chalicelib.storage.ports import NotFound, SecretStore
from chalicelib.storage.secrets import FileSecretStore, SecretsManagerStore

SECRET = {"Password": "pa55-W0rd", "HttpHeaders": {"Authorization": "Bearer abc"}}


@pytest.fixture
def secrets(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> SecretStore:
    if backend == "aws":
        request.getfixturevalue("aws_env")
        client = boto3.client("secretsmanager", region_name="us-east-1")
        return SecretsManagerStore(client, "dicomweb-test/")
    return FileSecretStore(tmp_path / "secrets.json")


def test_secret_round_trip(secrets: SecretStore) -> None:
    reference = secrets.put_secret("servers/a", SECRET)
    assert secrets.get_secret(reference) == SECRET
    again = secrets.put_secret("servers/a", {"Password": "new"})
    assert secrets.get_secret(again) == {"Password": "new"}
    secrets.delete_secret("servers/a")
    with pytest.raises(NotFound) as raised:
        secrets.get_secret(again)
    assert "new" not in str(raised.value)
    secrets.delete_secret("servers/a")  # deleting what is gone is no error


def test_secret_reference_holds_no_value(secrets: SecretStore) -> None:
    reference = secrets.put_secret("servers/b", SECRET)
    assert "pa55-W0rd" not in reference and "abc" not in reference


def test_file_secret_store_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text("{}")
    path.chmod(0o644)
    FileSecretStore(path).put_secret("servers/a", SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name("secrets.json.tmp").exists()
