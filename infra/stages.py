"""The stages of a deployment, each a stage of `.chalice/config.json` and a stack of
`infra/stack.py` (`STAGE=... make package synth deploy`, `chalice package --stage ...`):

- `dev`: a scratch stack, no sign-in; deleting the stack deletes its bucket and table;
- `aws`: the stage the mission's deploy audit names: the app as `make run` serves it (its
  default options, DELETE on, every route), no sign-in unless `AUTHORIZER` says; its bucket
  and table outlive the stack;
- `prod`: Cognito sign-in unless `AUTHORIZER` says, DELETE off; its bucket and table outlive
  the stack.
"""

from __future__ import annotations

KEEPS_DATA = {"dev": False, "aws": True, "prod": True}
"""Whether the stage's bucket and table outlive its stack (RemovalPolicy RETAIN, and the
table's deletion protection)."""
STAGES = tuple(KEEPS_DATA)
DEFAULT_AUTHORIZERS = {"dev": "none", "aws": "none", "prod": "cognito"}
"""The API Gateway authorizer of a stage when `AUTHORIZER` is not set: `prod` never answers
anyone; `dev` and `aws` answer as `make run` does on loopback."""
