"""The Cognito sign-in construct, synthesized on its own (no package needed)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import assertions

from infra.auth import PACKAGING_POOL_ARN, RESOURCE_SERVER, CognitoSignIn, stage_authorizer

VIEWER = "https://viewer.example/callback"


def _template() -> assertions.Template:
    app = cdk.App()
    stack = cdk.Stack(app, "SignIn")
    # Stands for the RestAPI resource that `chalice package` writes (AWS::Serverless::Api).
    rest_api = cdk.CfnResource(
        stack,
        "RestAPI",
        type="AWS::ApiGateway::RestApi",
        properties={
            "DefinitionBody": {
                "securityDefinitions": {
                    "cognito": {
                        "x-amazon-apigateway-authorizer": {
                            "type": "cognito_user_pools",
                            "providerARNs": [PACKAGING_POOL_ARN],
                        }
                    }
                }
            }
        },
    )
    sign_in = CognitoSignIn(
        stack,
        "SignIn",
        domain_prefix="dicomweb-test",
        viewer_urls=[VIEWER],
        removal=cdk.RemovalPolicy.DESTROY,
    )
    sign_in.protect(rest_api)
    return assertions.Template.from_stack(stack)


def test_sign_in_pool_resource_server_and_viewer_client() -> None:
    template = _template()
    template.has_resource_properties(
        "AWS::Cognito::UserPool",
        {"AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True}},
    )
    template.has_resource_properties(
        "AWS::Cognito::UserPoolResourceServer",
        {
            "Identifier": RESOURCE_SERVER,
            "Scopes": [
                {"ScopeName": "read", "ScopeDescription": assertions.Match.any_value()},
                {"ScopeName": "write", "ScopeDescription": assertions.Match.any_value()},
                {"ScopeName": "admin", "ScopeDescription": assertions.Match.any_value()},
            ],
        },
    )
    template.has_resource_properties(
        "AWS::Cognito::UserPoolClient",
        {
            "GenerateSecret": False,
            "AllowedOAuthFlows": ["code"],
            "CallbackURLs": [VIEWER],
        },
    )
    [client] = template.find_resources("AWS::Cognito::UserPoolClient").values()
    scopes = client["Properties"]["AllowedOAuthScopes"]
    assert scopes[:2] == ["openid", "email"]
    # Resource server scopes are "{identifier}/{scope}", the identifier a reference.
    assert [s["Fn::Join"][1][-1] for s in scopes[2:]] == ["/read", "/write", "/admin"]
    template.has_resource_properties("AWS::Cognito::UserPoolDomain", {"Domain": "dicomweb-test"})


def test_protect_points_the_authorizer_at_the_pool() -> None:
    rest_apis = _template().find_resources("AWS::ApiGateway::RestApi")
    [api] = rest_apis.values()
    authorizer = api["Properties"]["DefinitionBody"]["securityDefinitions"]["cognito"]
    [arn] = authorizer["x-amazon-apigateway-authorizer"]["providerARNs"]
    assert arn != PACKAGING_POOL_ARN
    assert "Fn::GetAtt" in arn and arn["Fn::GetAtt"][1] == "Arn"


def test_prod_stage_signs_in_unless_told_otherwise() -> None:
    assert stage_authorizer("prod", {}) == "cognito"
    assert stage_authorizer("dev", {}) == "none"
    assert stage_authorizer("prod", {"AUTHORIZER": "iam"}) == "iam"
    assert stage_authorizer("prod", {"AUTHORIZER": "none"}) == "none"
