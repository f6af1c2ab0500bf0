"""API Gateway REST (v1) proxy events as Lambda receives them, for tests of the Lambda path
(chalice.test.Client skips the base64 body). Imports nothing from Chalice, so that the
deployment tests can use it beside the packaged runtime."""

from __future__ import annotations

import base64


def api_gateway_event(
    method: str,
    path: str,
    resource: str,
    params: dict | None,
    headers: dict,
    body: bytes | None,
    query: dict[str, str] | None = None,
) -> dict:
    """An API Gateway REST (v1) proxy event as Lambda receives it, binary body base64."""
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": "/api" + path,
            "stage": "api",
            "identity": {"sourceIp": "203.0.113.9"},
        },
        "body": base64.b64encode(body).decode("ascii") if body is not None else None,
        "isBase64Encoded": body is not None,
    }
