"""Fixtures of the deployment checks: the synthesized template and the built Lambda package.

These tests run under Python 3.12 in the infra venv (`make test-infra`, after `make package`
and `make synth`): the package holds cp312 wheels. The package is unpacked into a temporary
directory put first on `sys.path` before any test module is imported, so `app` and
`chalicelib` are the packaged ones everywhere.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGE = os.environ.get("STAGE", "dev")
PACKAGE = ROOT / "build" / "lambda" / STAGE / "deployment.zip"
CDK_OUT = ROOT / "build" / "cdk.out"


def _built(path: Path, target: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make {target}` first")
    return path


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """The synthesized CloudFormation template of the stage's stack."""
    return json.loads(_built(CDK_OUT / f"{STAGE}.template.json", "synth").read_text())


def _unpack_package() -> Path | None:
    """The Lambda package unpacked as Lambda does; None before `make package`."""
    if not PACKAGE.exists():
        return None
    target = Path(tempfile.mkdtemp(prefix="lambda-task-"))
    atexit.register(shutil.rmtree, target, True)
    with zipfile.ZipFile(PACKAGE) as archive:
        archive.extractall(target)
    return target


# Before any test module is imported: `app` and `chalicelib` are the packaged ones for every
# test (infra.auth and infra.stack import chalicelib too); the repository comes after, for
# `infra` itself and tests.conftest's testdata().
PACKAGE_DIR = _unpack_package()
if PACKAGE_DIR is not None:
    sys.path.insert(0, str(PACKAGE_DIR))
sys.path.append(str(ROOT))


@pytest.fixture(scope="session")
def package_dir() -> Path:
    """The unpacked Lambda package, first on sys.path."""
    _built(PACKAGE, "package")
    assert PACKAGE_DIR is not None
    # pytest puts the repository first again when it sets up the `infra` package.
    sys.path.remove(str(PACKAGE_DIR))
    sys.path.insert(0, str(PACKAGE_DIR))
    return PACKAGE_DIR


def python_in_package(
    package_dir: Path, code: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh, isolated Python (this one: Lambda's 3.12) that imports from the
    unpacked package only, as a cold start does."""
    return subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, '.'); {code}"],
        cwd=package_dir,
        env={"PYTHONNOUSERSITE": "1", **(env or {})},
        capture_output=True,
        text=True,
    )


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def logical_id(template: dict[str, Any], kind: str, prefix: str) -> str:
    """The one resource of `kind` whose logical id starts with `prefix` (CDK adds a hash)."""
    (found,) = [k for k in resources_of_type(template, kind) if k.startswith(prefix)]
    return found
