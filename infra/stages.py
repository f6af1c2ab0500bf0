"""The stages of a deployment, each a stage of `.chalice/config.json` and a stack of
`infra/stack.py` (`STAGE=... make package synth deploy`, `chalice package --stage ...`):

- `dev`: a scratch stack for trying a change, no sign-in; deleting the stack deletes its
  bucket and table;
- `aws`: the server as `make run` serves it (its default options, DELETE on, every route),
  signed in with Cognito unless `AUTHORIZER` says; its bucket and table outlive the stack;
- `prod`: Cognito sign-in unless `AUTHORIZER` says, DELETE off; its bucket and table outlive
  the stack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chalicelib.config import ConfigError, read_document
from infra.packaging import ROOT

KEEPS_DATA = {"dev": False, "aws": True, "prod": True}
"""Whether the stage's bucket and table outlive its stack (RemovalPolicy RETAIN, and the
table's deletion protection)."""
STAGES = tuple(KEEPS_DATA)
DEFAULT_AUTHORIZERS = {"dev": "none", "aws": "cognito", "prod": "cognito"}
"""The API Gateway authorizer of a stage when `AUTHORIZER` is not set: a stage that keeps its
data answers only signed-in callers; `dev` answers anyone, as `make run` does on loopback."""
SIGN_IN_DOMAIN_PREFIXES = {"dev": "dicomweb-dev", "aws": "dicomweb-pacs", "prod": "dicomweb-prod"}
"""The Cognito hosted domain prefix of a stage when `COGNITO_DOMAIN_PREFIX` is not set:
Cognito refuses a prefix holding `aws`, `amazon` or `cognito`, hence not `dicomweb-aws`."""


def stage_options(stage: str) -> dict[str, Any]:
    """The stage's `DICOMWEB_CONFIG` document in `.chalice/config.json` (`{}` without one)."""
    on_disk = json.loads((ROOT / ".chalice" / "config.json").read_text())
    environment = on_disk.get("environment_variables", {}) | on_disk["stages"][stage].get(
        "environment_variables", {}
    )
    return json.loads(environment.get("DICOMWEB_CONFIG") or "{}")


def deployed_options(stage: str, env: Mapping[str, str]) -> str:
    """The `DICOMWEB_CONFIG` the stage's functions get: the stage's own, with the JSON of
    `DICOMWEB_CONFIG` in `env` (when set) merged over it, its `DicomWeb` section key by key.
    Chalice merges environment variables by name, so the given document alone would drop
    the stage's options (`prod`'s `EnableDelete: false`). Only JSON text is taken, not a file
    name as `make run` takes: the stack is synthesized in build/ (infra/app.py), where a
    relative name would not be found."""
    options = stage_options(stage)
    raw = env.get("DICOMWEB_CONFIG", "").strip()
    if not raw:
        return json.dumps(options)
    if not raw.startswith("{"):
        raise ConfigError(
            f"DICOMWEB_CONFIG of a deployment must be the JSON text itself, like "
            f'{{"DicomWeb": {{...}}}}, not a file name: {raw!r}'
        )
    given = read_document(raw)
    merged = {**options, **given}
    merged["DicomWeb"] = {**options.get("DicomWeb", {}), **given.get("DicomWeb", {})}
    return json.dumps(merged)
