"""Fixtures of the deployment checks: the synthesized template and the built Lambda package.

These tests run under Python 3.12 in the infra venv (`make test-infra`, after `make package`
and `make synth`): the package holds cp312 wheels. The package is unpacked into a temporary
directory put first on `sys.path`, so `app` and `chalicelib` are the packaged ones.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "build" / "lambda" / "deployment.zip"
CDK_OUT = ROOT / "build" / "cdk.out"
STAGE = os.environ.get("STAGE", "dev")


def _built(path: Path, target: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make {target}` first")
    return path


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """The synthesized CloudFormation template of the stage's stack."""
    return json.loads(_built(CDK_OUT / f"{STAGE}.template.json", "synth").read_text())


@pytest.fixture(scope="session")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Lambda package unpacked as Lambda does, first on sys.path."""
    target = tmp_path_factory.mktemp("lambda-task")
    with zipfile.ZipFile(_built(PACKAGE, "package")) as archive:
        archive.extractall(target)
    sys.path.insert(0, str(target))
    sys.path.append(str(ROOT))  # after the package: only for tests.conftest's testdata()
    return target


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def logical_id(template: dict[str, Any], kind: str, prefix: str) -> str:
    """The one resource of `kind` whose logical id starts with `prefix` (CDK adds a hash)."""
    (found,) = [k for k in resources_of_type(template, kind) if k.startswith(prefix)]
    return found
