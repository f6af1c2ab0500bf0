"""The stages: each one a Chalice stage of `.chalice/config.json` and a stack of `infra/stack.py`
(`make package STAGE=...`, `make synth STAGE=...`, `chalice package --stage ...`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import PACKAGE, ROOT, STAGE

from infra.auth import stage_authorizer
from infra.stages import KEEPS_DATA, STAGES


def _chalice_stage(stage: str) -> dict[str, Any]:
    """The stage's settings as `chalice package --stage` reads them: the stage's own over the
    top level's, its environment variables merged over the top level's."""
    on_disk = json.loads((ROOT / ".chalice" / "config.json").read_text())
    settings = on_disk["stages"][stage]
    environment = on_disk["environment_variables"] | settings.get("environment_variables", {})
    return {**on_disk, **settings, "environment_variables": environment}


def _routes(env: dict[str, str]) -> dict[str, list[str]]:
    from chalicelib.config import load_settings
    from chalicelib.server.api import build_route_table

    table = build_route_table(load_settings(env))
    return {path: sorted(handlers) for path, handlers in table.routes.items()}


def test_the_mission_s_aws_stage_is_a_stage() -> None:
    assert STAGES == ("dev", "aws", "prod")
    on_disk = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert set(on_disk["stages"]) == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_is_served_under_api_with_options_that_load(
    stage: str, package_dir: Path
) -> None:
    """The `/api` stage prefix is what the stack's outputs, the README and the packaged
    handler's tests use; the stage's options are valid settings."""
    config = _chalice_stage(stage)
    assert config["api_gateway_stage"] == "api"
    env = config["environment_variables"]
    assert env["BACKEND"] == "aws"
    assert _routes({**env, "BUCKET": "b", "TABLE": "t"})


def test_aws_stage_has_every_route_of_make_run(package_dir: Path) -> None:
    """`aws` answers the routes `make run` answers with its default options (DELETE on)."""
    env = _chalice_stage("aws")["environment_variables"]
    local = _routes({})
    assert "DELETE" in local["/dicom-web/studies/{study}"]
    assert _routes({**env, "BUCKET": "b", "TABLE": "t"}) == local


def test_aws_stage_answers_as_make_run_and_keeps_its_data() -> None:
    assert stage_authorizer("aws", {}) == "none"
    assert stage_authorizer("aws", {"AUTHORIZER": "cognito"}) == "cognito"
    assert KEEPS_DATA == {"dev": False, "aws": True, "prod": True}


def test_package_is_the_stage_s(package_dir: Path) -> None:
    """`make package STAGE=...` builds the stage's own package: its sam.json carries the
    stage's settings (one package a stage, not the last one built)."""
    sam = json.loads((PACKAGE.parent / "sam.json").read_text())
    env = sam["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    expected = _chalice_stage(STAGE)["environment_variables"]
    assert env["DICOMWEB_CONFIG"] == expected["DICOMWEB_CONFIG"]
    assert sam["Resources"]["RestAPI"]["Properties"]["StageName"] == "api"


@pytest.mark.parametrize("target", ["deploy", "destroy"])
def test_deploy_and_destroy_synthesize_the_stage_first(target: str) -> None:
    """`cdk deploy` and `cdk destroy` find the stack by its id (the stage) in build/cdk.out,
    which holds the last stage synthesized only: each synthesizes its own stage first."""
    result = subprocess.run(
        ["make", "-n", "-B", "-o", ".venv-infra/.installed", target, "STAGE=aws", "CDK_CLI=cdk"],
        cwd=ROOT,
        env={**os.environ, "MAKEFLAGS": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    # -n: printed, not run; -B: as if the stage's template were out of date
    commands = result.stdout.splitlines()
    synth = next(i for i, c in enumerate(commands) if "-m infra.app" in c)
    run = next(i for i, c in enumerate(commands) if c.startswith(f"cdk {target} "))
    assert "STAGE=aws" in commands[synth] and synth < run
