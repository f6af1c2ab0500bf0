"""The stages: each one a Chalice stage of `.chalice/config.json` and a stack of `infra/stack.py`
(`make package STAGE=...`, `make synth STAGE=...`, `chalice package --stage ...`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PACKAGE, ROOT, STAGE

from infra.auth import stage_authorizer
from infra.stages import KEEPS_DATA, SIGN_IN_DOMAIN_PREFIXES, STAGES, deployed_options


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


def test_aws_stage_is_a_stage() -> None:
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


def test_stages_that_keep_data_sign_in_unless_opened_explicitly() -> None:
    """`aws` has DELETE and the admin routes (PUT /servers makes the Lambdas call any URL)
    and keeps its data: like `prod`, only signed-in callers reach it unless
    `AUTHORIZER=none` says otherwise."""
    assert KEEPS_DATA == {"dev": False, "aws": True, "prod": True}
    for stage in ("aws", "prod"):
        assert stage_authorizer(stage, {}) == "cognito"
        assert stage_authorizer(stage, {"AUTHORIZER": "none"}) == "none"
    assert stage_authorizer("dev", {}) == "none"


def test_default_sign_in_domains_are_ones_cognito_takes() -> None:
    """Cognito refuses a domain prefix holding `aws`, `amazon` or `cognito`."""
    assert set(SIGN_IN_DOMAIN_PREFIXES) == set(STAGES)
    for prefix in SIGN_IN_DOMAIN_PREFIXES.values():
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", prefix), prefix
        assert not re.search("aws|amazon|cognito", prefix), prefix


def test_given_options_are_merged_over_the_stage_s() -> None:
    """README's `AUTHORIZER=oidc DICOMWEB_CONFIG='{"DicomWeb": {"OidcIssuer": ...}}'`: the
    stage's options stay (prod's DELETE off), the given ones are added or win."""
    given = {"DicomWeb": {"OidcIssuer": "https://idp.example", "OidcAudience": "dicomweb"}}
    merged = json.loads(deployed_options("prod", {"DICOMWEB_CONFIG": json.dumps(given)}))
    assert merged["DicomWeb"] == {"EnableDelete": False, **given["DicomWeb"]}
    opened = {"DICOMWEB_CONFIG": '{"DicomWeb": {"EnableDelete": true}, "Servers": {}}'}
    assert json.loads(deployed_options("prod", opened)) == {
        "DicomWeb": {"EnableDelete": True},
        "Servers": {},
    }
    assert json.loads(deployed_options("aws", {})) == _options("aws")
    for bad in ("config.json", '{"DicomWeb": {', '{"DicomWeb": []}', "[]"):
        with pytest.raises(ValueError, match="DICOMWEB_CONFIG"):
            deployed_options("prod", {"DICOMWEB_CONFIG": bad})


def _options(stage: str) -> dict[str, Any]:
    return json.loads(_chalice_stage(stage)["environment_variables"]["DICOMWEB_CONFIG"])


def test_package_is_the_stage_s(package_dir: Path) -> None:
    """`make package STAGE=...` builds the stage's own package: its sam.json carries the
    stage's settings (one package a stage, not the last one built)."""
    sam = json.loads((PACKAGE.parent / "sam.json").read_text())
    env = sam["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    expected = _chalice_stage(STAGE)["environment_variables"]
    assert env["DICOMWEB_CONFIG"] == expected["DICOMWEB_CONFIG"]
    assert sam["Resources"]["RestAPI"]["Properties"]["StageName"] == "api"
    tags = sam["Resources"]["APIHandler"]["Properties"]["Tags"]
    assert f":stage={STAGE}:" in tags["aws-chalice"], tags


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


SYNTH_SETTINGS = ("AUTHORIZER", "DICOMWEB_CONFIG", "VIEWER_URLS", "COGNITO_DOMAIN_PREFIX")
PACKAGE_SETTINGS = ("AUTHORIZER", "COGNITO_USER_POOL_ARN")
TEMPLATE = "build/cdk.out/aws.template.json"
LAMBDA_PACKAGE = "build/lambda/aws/deployment.zip"


def _make(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The Makefile's rules in `tmp_path`, a tree without sources: only the stage's settings
    decide whether a target is up to date."""
    command = ["make", "-f", str(ROOT / "Makefile"), "-o", ".venv-infra/.installed"]
    command += ["APP_SOURCES=", "STAGE=aws", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)


def _would_build(tmp_path: Path, target: str, changed: dict[str, str]) -> bool:
    """Whether `make` would build `target` again, once built without any of the settings, when
    `changed` is set (`make -q`: exit status 1 when out of date)."""
    tmp_path.mkdir()
    unset = {**os.environ, "MAKEFLAGS": ""}
    for name in {*SYNTH_SETTINGS, *PACKAGE_SETTINGS}:
        unset.pop(name, None)
    stamps = _make(tmp_path, unset, "build/settings/aws.synth", "build/settings/aws.package")
    assert stamps.returncode == 0, stamps.stderr
    built = tmp_path / target
    built.parent.mkdir(parents=True)
    built.touch()
    # Stamps and target an hour old: a stamp rewritten now is newer whatever the clock's grain.
    an_hour_ago = time.time() - 3600
    for path in [built, *(tmp_path / "build" / "settings").iterdir()]:
        os.utime(path, (an_hour_ago, an_hour_ago))
    result = _make(tmp_path, {**unset, **changed}, "-q", target)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 1


@pytest.mark.parametrize("name", SYNTH_SETTINGS)
def test_a_changed_setting_synthesizes_the_stack_again(name: str, tmp_path: Path) -> None:
    """README's `VIEWER_URLS=.../callback make deploy` after a first deploy: the stack reads
    these at synth, so a change builds the template again (it deployed the old one before);
    the same settings keep the one built."""
    assert _would_build(tmp_path / "changed", TEMPLATE, {name: "x"})
    assert not _would_build(tmp_path / "same", TEMPLATE, {})


@pytest.mark.parametrize("name", PACKAGE_SETTINGS)
def test_a_changed_setting_packages_the_stage_again(name: str, tmp_path: Path) -> None:
    """The app `chalice package` loads gives its routes the authorizer these name (sam.json);
    the `DICOMWEB_CONFIG` given is not the package's: Chalice loads the app with the stage's
    own over it."""
    assert all("DICOMWEB_CONFIG" in _chalice_stage(s)["environment_variables"] for s in STAGES)
    assert _would_build(tmp_path / "changed", LAMBDA_PACKAGE, {name: "x"})
    assert not _would_build(tmp_path / "same", LAMBDA_PACKAGE, {})
    assert not _would_build(tmp_path / "config", LAMBDA_PACKAGE, {"DICOMWEB_CONFIG": "{}"})
