"""Sign-in for a stage whose `AUTHORIZER` is `cognito`: the user pool that API Gateway's
Cognito authorizer trusts (chalicelib/server/auth.py reads the verdict, README
"Authentication, scopes and limits").

- a user pool (no self sign-up: an administrator invites the users);
- the resource server `dicomweb` with the scopes `read`, `write` and `admin`, which the app's
  routes require (`dicomweb/read` ...);
- an app client for a browser viewer such as OHIF: authorization code flow with PKCE, no
  secret, the callback URLs of the stage's `viewer_urls` context;
- a hosted sign-in domain (`{domain_prefix}.auth.{region}.amazoncognito.com`).

`chalice package` writes the Cognito authorizer into the API's OpenAPI body with the pool ARN
it was given at packaging time (a placeholder: the pool does not exist yet); `protect` puts
the real ARN there.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from chalicelib.config import SCOPES
from infra.stages import DEFAULT_AUTHORIZERS

SCOPE_DESCRIPTIONS = {
    "read": "search and retrieve (QIDO-RS, WADO-RS, WADO-URI, rendered, the web app)",
    "write": "store (STOW-RS, uploads)",
    "admin": "delete, remote servers, proxies and jobs",
}
RESOURCE_SERVER = "dicomweb"
PACKAGING_POOL_ARN = "arn:aws:cognito-idp:us-east-1:000000000000:userpool/us-east-1_packaging"
"""The pool ARN `chalice package` sees; `CognitoSignIn.protect` replaces it in the template."""


def stage_authorizer(stage: str, env: Mapping[str, str]) -> str:
    """`AUTHORIZER` when set (`none` included, for a private test stack), else the stage's
    default: a `prod` stack holds patient data and is signed in with Cognito unless told
    otherwise."""
    return env.get("AUTHORIZER") or DEFAULT_AUTHORIZERS[stage]


class CognitoSignIn(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        domain_prefix: str,
        viewer_urls: list[str],
        removal: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            removal_policy=removal,
        )
        scopes = [
            cognito.ResourceServerScope(scope_name=name, scope_description=SCOPE_DESCRIPTIONS[name])
            for name in SCOPES
        ]
        self.resource_server = self.pool.add_resource_server(
            "DicomWeb", identifier=RESOURCE_SERVER, scopes=scopes
        )
        self.viewer_client = self.pool.add_client(
            "Viewer",
            generate_secret=False,
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[
                    cognito.OAuthScope.OPENID,
                    cognito.OAuthScope.EMAIL,
                    *(cognito.OAuthScope.resource_server(self.resource_server, s) for s in scopes),
                ],
                callback_urls=viewer_urls,
                logout_urls=viewer_urls,
            ),
        )
        self.domain = self.pool.add_domain(
            "Domain", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=domain_prefix)
        )

    def protect(self, rest_api: cdk.CfnResource) -> None:
        """Point the API's Cognito authorizer (as `chalice package` wrote it) at this pool."""
        rest_api.add_property_override(
            "DefinitionBody.securityDefinitions.cognito.x-amazon-apigateway-authorizer"
            ".providerARNs",
            [self.pool.user_pool_arn],
        )
