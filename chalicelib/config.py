"""Typed settings, read once per process.

Keys follow the Orthanc DICOMweb plugin's manual (`DicomWeb.Root`, `StudiesMetadata`, ...) so
that a user finds them where they would look. Sources, later ones winning:

1. the defaults below;
2. a JSON file named by `DICOMWEB_CONFIG` (Orthanc style: `{"DicomWeb": {...}}`) or the JSON
   text itself in that variable;
3. a few environment variables for deployment wiring: `BACKEND`, `DATA_DIR`, `BUCKET`,
   `TABLE`, `AWS_REGION`.

A bad value is rejected at start with the allowed values listed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

BACKENDS = ("local", "aws")
AUTHORIZERS = ("none", "cognito", "oidc", "iam")
SCOPES = ("read", "write", "admin")
METADATA_MODES = ("Full", "MainDicomTags", "Extrapolate")

DEFAULT_SERIES_EXTRAPOLATED_TAGS = (
    "BitsAllocated",
    "BitsStored",
    "Columns",
    "HighBit",
    "PhotometricInterpretation",
    "PixelSpacing",
    "PlanarConfiguration",
    "RescaleIntercept",
    "RescaleSlope",
    "Rows",
    "SOPClassUID",
    "SamplesPerPixel",
    "SliceThickness",
)


class ConfigError(ValueError):
    """A configuration value is not allowed; the message lists what is."""


@dataclass(frozen=True)
class Settings:
    backend: str = "local"
    data_dir: Path = Path("var")
    bucket: str = ""
    table: str = ""
    region: str = "us-east-1"

    # DicomWeb section of the Orthanc plugin's manual.
    root: str = "/dicom-web"
    enable_wado: bool = True
    wado_root: str = "/wado"
    ssl: bool = False
    host: str = ""
    public_root: str = ""
    """Absolute URL prefix of the DICOMweb root as clients see it (e.g. behind a proxy)."""
    qido_case_sensitive: bool = False
    studies_metadata: str = "Full"
    series_metadata: str = "Full"
    studies_metadata_extrapolated_tags: tuple[str, ...] = ()
    series_metadata_extrapolated_tags: tuple[str, ...] = DEFAULT_SERIES_EXTRAPOLATED_TAGS
    servers: Mapping[str, Any] = field(default_factory=dict)
    servers_in_database: bool = False

    # Our own options.
    overwrite_instances: bool = False
    max_stow_body: int = 0
    """Largest STOW-RS body in bytes; 0: 4,000,000 on AWS (Lambda payload), none locally."""
    inline_limit: int = 4_000_000
    """Largest answer sent inline on AWS; larger ones go through S3 and 303 See Other."""
    strict_accept: bool = False
    """True: a request without Accept gets 406 as PS3.18 §8.7.5 says (default: `*/*`)."""
    enable_delete: bool = True
    bulk_threshold: int = 1024
    """Binary values up to this many bytes are inlined in metadata, larger get a BulkDataURI."""
    qido_max_limit: int = 10_000
    """Most results one QIDO-RS answer holds, at any level (AWS HealthImaging's cap too)."""
    qido_default_limit: int = 100
    """Results of a study or series search that gives no `limit`: one page of a listing."""
    qido_instance_default_limit: int = 10_000
    """Results of an instance search without `limit` (at most `qido_max_limit`): a whole
    ordinary study, as Orthanc answers; dicomweb-client's `search_for_instances` asks for no
    limit."""
    qido_scan_budget: int = 5000
    """Records a search without an indexed key may read before it is answered 413."""
    cors_allowed_origins: tuple[str, ...] = ()
    viewer_url_template: str = ""
    """The web app's "Viewer" link, `{uid}` replaced by the StudyInstanceUID (e.g. OHIF's
    `/viewer?StudyInstanceUIDs={uid}`); empty: no link."""
    webapp_oidc_authority: str = ""
    """The OpenID provider (issuer URL) the web app signs in with, on a stage whose API Gateway
    wants a token (`cognito`, `oidc`); empty: the app sends no token."""
    webapp_oidc_client_id: str = ""
    """The web app's client id at `webapp_oidc_authority` (a public client: code flow + PKCE)."""
    webapp_oidc_scopes: str = ""
    """The scopes the web app asks for; empty: `openid` and each of ours with `scope_prefix`."""

    # Authentication and authorization (docs: README "Authentication").
    authentication_enabled: bool = False
    """Orthanc's `AuthenticationEnabled`: HTTP Basic against `RegisteredUsers` (local)."""
    registered_users: Mapping[str, Any] = field(default_factory=dict)
    """Orthanc's `RegisteredUsers`: {"user": "password"}."""
    user_scopes: Mapping[str, Any] = field(default_factory=dict)
    """{"user": ["read", ...]}: a user (Basic) or IAM ARN not listed has every scope."""
    authorizer: str = "none"
    """On AWS, the API Gateway authorizer whose verdict the app reads: none | cognito | oidc |
    iam. `none` answers every call: only for a private API."""
    cognito_user_pool_arn: str = ""
    """`cognito`: the user pool whose access tokens API Gateway accepts."""
    oidc_issuer: str = ""
    """`oidc`: the `iss` of accepted tokens; its discovery document names the JWKS."""
    oidc_audience: str = ""
    """`oidc`: the `aud` (or Cognito's `client_id`) of accepted tokens."""
    oidc_jwks_url: str = ""
    """`oidc`: the JWKS URL, when not the issuer's discovered `jwks_uri`."""
    scope_prefix: str = "dicomweb/"
    """Prefix of the OAuth scopes in tokens (Cognito resource server identifier + '/')."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or CIDR blocks whose Forwarded / X-Forwarded-* headers are believed."""

    # Limits per request: each answered with a 4xx that names it.
    max_request_body: int = 1_073_741_824
    """Largest request body locally (bytes); on AWS API Gateway stops at 10 MB first."""
    max_query_string: int = 8192
    """Longest query string (characters)."""
    max_stow_parts: int = 10_000
    """Most parts in one STOW-RS body."""
    max_frames: int = 1000
    """Most frame numbers in one frame list (each at most once)."""
    max_image_size: int = 8192
    """Largest rendered width or height: /rendered viewport, WADO-URI rows and columns."""
    max_crop_pixels: int = 16_777_216
    """Largest source region (sw x sh pixels) of a /rendered viewport crop."""
    max_sequence_depth: int = 16
    """Deepest sequence nesting accepted in a stored instance."""
    max_ranges: int = 16
    """Most ranges in one Range header (only the first is served)."""

    # The local server's connections (`make run`; chalicelib/server/localconnections.py).
    http_threads_count: int = 256
    """Most requests the local server serves at once; more wait their turn (Orthanc's
    `HttpThreadsCount`). A connection waiting for its request takes none."""
    request_head_timeout: int = 30
    """Seconds a request line and headers may take, from their first byte (local server)."""
    request_body_min_rate: int = 1000
    """Bytes per second a request body must average after its first `request_head_timeout`
    seconds, else 408 (local server); 0: none."""
    response_min_rate: int = 10_000
    """Bytes per second a client must take an answer at, over the time the local server waits
    for it past the first `request_head_timeout` seconds, else the connection is closed and
    its worker freed; 0: none. (1 KB/s readers of a 50 MB series held every worker.)"""
    sweep_interval: int = 300
    """Seconds between the local server's sweeps for the blobs of interrupted stores and
    deletes (also run at start-up); 0: at start-up only."""

    # DICOMweb client (remote servers and jobs), Orthanc's names.
    stow_max_instances: int = 10
    """Most instances in one STOW-RS request a job sends (`DicomWeb.StowMaxInstances`)."""
    stow_max_size: int = 3
    """Most MB in one STOW-RS request a job sends (`DicomWeb.StowMaxSize`); 0: no limit. The
    default keeps a batch under this project's 4,000,000-byte STOW body limit on AWS."""
    http_timeout: int = 60
    """Seconds a remote call may take (global `HttpTimeout`); a server's `Timeout` wins."""
    https_verify_peers: bool = True
    https_ca_certificates: str = ""
    http_proxy: str = ""
    jobs_synchronous_deadline: int = 25
    """Seconds a synchronous job call waits on AWS before answering 202 (API Gateway: 29 s)."""
    jobs_steps_per_execution: int = 1000
    """Steps a job's Step Functions execution runs before the job goes on in a fresh one
    (`DicomWeb.JobsStepsPerExecution`): a Standard workflow's history stops at 25,000 events,
    about 7 a step (more with retries)."""
    jobs_history_size: int = 10
    """Finished jobs (Success or Failure) kept, the latest ended; an older one is deleted,
    its record and its blobs, when a job ends (Orthanc's `JobsHistorySize`, top level)."""
    jobs_state_machine_arn: str = ""
    """The Step Functions state machine that runs jobs on AWS (env `JOBS_STATE_MACHINE_ARN`)."""


MAX_STEPS_PER_EXECUTION = 2500
"""Of a job's steps in one execution: 25,000 history events at about 7 a step, with room for
retries (each adds about 4)."""

# Orthanc-style key → Settings field.
_DICOMWEB_KEYS = {
    "Root": "root",
    "EnableWado": "enable_wado",
    "WadoRoot": "wado_root",
    "Ssl": "ssl",
    "Host": "host",
    "PublicRoot": "public_root",
    "QidoCaseSensitive": "qido_case_sensitive",
    "StudiesMetadata": "studies_metadata",
    "SeriesMetadata": "series_metadata",
    "StudiesMetadataExtrapolatedTags": "studies_metadata_extrapolated_tags",
    "SeriesMetadataExtrapolatedTags": "series_metadata_extrapolated_tags",
    "Servers": "servers",
    "ServersInDatabase": "servers_in_database",
    "MaxStowBody": "max_stow_body",
    "InlineLimit": "inline_limit",
    "StrictAccept": "strict_accept",
    "EnableDelete": "enable_delete",
    "BulkDataThreshold": "bulk_threshold",
    "QidoMaxLimit": "qido_max_limit",
    "QidoDefaultLimit": "qido_default_limit",
    "QidoInstanceDefaultLimit": "qido_instance_default_limit",
    "QidoScanBudget": "qido_scan_budget",
    "CorsAllowedOrigins": "cors_allowed_origins",
    "UserScopes": "user_scopes",
    "Authorizer": "authorizer",
    "ScopePrefix": "scope_prefix",
    "CognitoUserPoolArn": "cognito_user_pool_arn",
    "OidcIssuer": "oidc_issuer",
    "OidcAudience": "oidc_audience",
    "OidcJwksUrl": "oidc_jwks_url",
    "TrustedProxies": "trusted_proxies",
    "MaxRequestBody": "max_request_body",
    "MaxQueryString": "max_query_string",
    "MaxStowParts": "max_stow_parts",
    "MaxFrames": "max_frames",
    "MaxImageSize": "max_image_size",
    "MaxCropPixels": "max_crop_pixels",
    "MaxSequenceDepth": "max_sequence_depth",
    "MaxRanges": "max_ranges",
    "RequestHeadTimeout": "request_head_timeout",
    "RequestBodyMinRate": "request_body_min_rate",
    "ResponseMinRate": "response_min_rate",
    "SweepInterval": "sweep_interval",
    "ViewerUrlTemplate": "viewer_url_template",
    "WebAppOidcAuthority": "webapp_oidc_authority",
    "WebAppOidcClientId": "webapp_oidc_client_id",
    "WebAppOidcScopes": "webapp_oidc_scopes",
    "StowMaxInstances": "stow_max_instances",
    "StowMaxSize": "stow_max_size",
    "JobsSynchronousDeadline": "jobs_synchronous_deadline",
    "JobsStepsPerExecution": "jobs_steps_per_execution",
}
_TOP_LEVEL_KEYS = {
    "OverwriteInstances": "overwrite_instances",
    "AuthenticationEnabled": "authentication_enabled",
    "RegisteredUsers": "registered_users",
    "HttpTimeout": "http_timeout",
    "HttpThreadsCount": "http_threads_count",
    "HttpsVerifyPeers": "https_verify_peers",
    "HttpsCACertificates": "https_ca_certificates",
    "HttpProxy": "http_proxy",
    "JobsHistorySize": "jobs_history_size",
}
_ENV_KEYS = {
    "BACKEND": "backend",
    "DATA_DIR": "data_dir",
    "BUCKET": "bucket",
    "TABLE": "table",
    "AWS_REGION": "region",
    "AUTHORIZER": "authorizer",
    "COGNITO_USER_POOL_ARN": "cognito_user_pool_arn",
    "WEBAPP_OIDC_AUTHORITY": "webapp_oidc_authority",
    "WEBAPP_OIDC_CLIENT_ID": "webapp_oidc_client_id",
    "JOBS_STATE_MACHINE_ARN": "jobs_state_machine_arn",
}


_AT_LEAST_ONE = frozenset(
    {
        "qido_max_limit",
        "qido_default_limit",
        "qido_instance_default_limit",
        "max_request_body",
        "max_query_string",
        "max_stow_parts",
        "max_frames",
        "max_image_size",
        "max_crop_pixels",
        "max_sequence_depth",
        "max_ranges",
        "stow_max_instances",
        "http_timeout",
        "jobs_steps_per_execution",
        "jobs_history_size",
        "http_threads_count",
        "request_head_timeout",
    }
)
"""Integer options where 0 would refuse everything; the others take 0 (none, or no limit)."""


def _coerce(name: str, value: Any, default: Any, attr: str = "") -> Any:
    """`value` of option `name` as the type of its default; ConfigError naming both when it
    is not one (issue 11: `true` was taken as 1, -3 as a limit, a list as a string)."""
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, not {value!r}")
        minimum = 1 if attr in _AT_LEAST_ONE else 0
        if value < minimum:
            raise ConfigError(f"{name} must be {minimum} or more, not {value}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of strings, not {value!r}")
        return tuple(value)
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be an object, not {value!r}")
        return dict(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {value!r}")
    return Path(value) if isinstance(default, Path) else value


def read_document(raw: str) -> dict[str, Any]:
    """The `DICOMWEB_CONFIG` document: `raw` itself when it is JSON text (starts with `{`),
    else the JSON file it names; ConfigError naming the problem when it is neither, or when
    it or its `DicomWeb` section is not an object."""
    inline = raw.lstrip().startswith("{")
    source = "DICOMWEB_CONFIG" if inline else f"DICOMWEB_CONFIG file {raw}"
    try:
        text = raw if inline else Path(raw).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source} cannot be read: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source} must hold a JSON object")
    if not isinstance(document.get("DicomWeb", {}), dict):
        raise ConfigError(f"{source}: DicomWeb must be an object")
    return document


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment (see the module docstring)."""
    env = os.environ if env is None else env
    defaults = {f.name: f.default for f in fields(Settings) if f.default is not field}
    defaults |= {"servers": {}, "registered_users": {}, "user_scopes": {}}
    chosen: dict[str, Any] = {}
    if env.get("DICOMWEB_CONFIG"):
        document = read_document(env["DICOMWEB_CONFIG"])
        section = document.get("DicomWeb", {})
        for key, value in section.items():
            if key in _DICOMWEB_KEYS:
                chosen[_DICOMWEB_KEYS[key]] = (f"DicomWeb.{key}", value)
            elif key == "Enable":
                continue
            else:
                raise ConfigError(
                    f"Unknown option DicomWeb.{key}; known: {', '.join(sorted(_DICOMWEB_KEYS))}"
                )
        for key, attr in _TOP_LEVEL_KEYS.items():
            if key in document:
                chosen[attr] = (key, document[key])
    for key, attr in _ENV_KEYS.items():
        if env.get(key):
            chosen[attr] = (key, env[key])
    values = {
        attr: _coerce(name, value, defaults[attr], attr) for attr, (name, value) in chosen.items()
    }
    for attr in ("root", "wado_root"):
        if attr in values:
            values[attr] = "/" + values[attr].strip("/")
    settings = Settings(**values)
    _validate(settings)
    if settings.backend == "aws" and not settings.max_stow_body:
        settings = replace(settings, max_stow_body=4_000_000)
    return settings


def _validate(settings: Settings) -> None:
    if settings.backend not in BACKENDS:
        raise ConfigError(f"BACKEND must be one of {', '.join(BACKENDS)}, not {settings.backend!r}")
    for name in ("studies_metadata", "series_metadata"):
        if getattr(settings, name) not in METADATA_MODES:
            raise ConfigError(
                f"{name} must be one of {', '.join(METADATA_MODES)}, "
                f"not {getattr(settings, name)!r}"
            )
    template = settings.viewer_url_template
    if template and (
        "{uid}" not in template or not template.startswith(("/", "http://", "https://"))
    ):
        raise ConfigError(
            "DicomWeb.ViewerUrlTemplate must be a path or an http(s) URL holding {uid}, e.g. "
            f"/viewer?StudyInstanceUIDs={{uid}}, not {template!r}"
        )
    if not settings.root.startswith("/"):
        raise ConfigError(f"DicomWeb.Root must start with '/', not {settings.root!r}")
    if settings.qido_default_limit > settings.qido_max_limit:
        raise ConfigError(
            f"DicomWeb.QidoDefaultLimit {settings.qido_default_limit} must not exceed "
            f"DicomWeb.QidoMaxLimit {settings.qido_max_limit}"
        )
    _validate_auth(settings)
    _validate_servers(settings)


def _validate_auth(settings: Settings) -> None:
    if settings.authorizer not in AUTHORIZERS:
        raise ConfigError(
            f"DicomWeb.Authorizer must be one of {', '.join(AUTHORIZERS)}, "
            f"not {settings.authorizer!r}"
        )
    if settings.authorizer == "oidc" and not (settings.oidc_issuer and settings.oidc_audience):
        raise ConfigError("DicomWeb.Authorizer oidc needs DicomWeb.OidcIssuer and OidcAudience")
    if settings.authorizer == "cognito" and not settings.cognito_user_pool_arn:
        raise ConfigError("DicomWeb.Authorizer cognito needs DicomWeb.CognitoUserPoolArn")
    authority = urllib.parse.urlsplit(settings.webapp_oidc_authority)
    if settings.webapp_oidc_authority and (
        authority.scheme not in ("http", "https") or not authority.netloc
    ):
        raise ConfigError(
            "DicomWeb.WebAppOidcAuthority must be the issuer's http(s) URL, not "
            f"{settings.webapp_oidc_authority!r}"
        )
    if bool(settings.webapp_oidc_authority) != bool(settings.webapp_oidc_client_id):
        raise ConfigError("DicomWeb.WebAppOidcAuthority and WebAppOidcClientId go together")
    for user, password in settings.registered_users.items():
        if not isinstance(password, str) or not password:
            raise ConfigError(f"RegisteredUsers.{user} must be a non-empty password string")
    if settings.authentication_enabled and not settings.registered_users:
        raise ConfigError("AuthenticationEnabled is true but RegisteredUsers is empty")
    for user, scopes in settings.user_scopes.items():
        if not isinstance(scopes, list) or not set(scopes) <= set(SCOPES):
            raise ConfigError(
                f"DicomWeb.UserScopes.{user} must be a list of {', '.join(SCOPES)}, not {scopes!r}"
            )
    for proxy in settings.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"DicomWeb.TrustedProxies: {proxy!r} is not an IP address or CIDR block"
            ) from None


def _validate_servers(settings: Settings) -> None:
    if not 0 <= settings.jobs_synchronous_deadline <= 28:
        raise ConfigError(
            f"DicomWeb.JobsSynchronousDeadline must be 0 to 28 seconds (API Gateway answers "
            f"504 after 29 s), not {settings.jobs_synchronous_deadline}"
        )
    if settings.jobs_steps_per_execution > MAX_STEPS_PER_EXECUTION:
        raise ConfigError(
            f"DicomWeb.JobsStepsPerExecution must be 1 to {MAX_STEPS_PER_EXECUTION} (a Step "
            f"Functions execution stops at 25,000 history events, about 7 a step), not "
            f"{settings.jobs_steps_per_execution}"
        )
    from chalicelib.client.registry import InvalidServer, parse_server

    for name, value in settings.servers.items():
        try:
            parse_server(name, value, lenient=True)
        except InvalidServer as exc:
            raise ConfigError(f"DicomWeb.Servers: {exc}") from None
