"""Settings: Orthanc-style keys, environment wiring, rejection of bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.config import ConfigError, load_settings
from chalicelib.context import build_context


def test_load_settings_defaults() -> None:
    settings = load_settings({})
    assert settings.backend == "local"
    assert settings.root == "/dicom-web"
    assert settings.max_stow_body == 0
    assert settings.series_metadata == "Full"


def test_load_settings_orthanc_keys_from_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    document = {
        "OverwriteInstances": True,
        "DicomWeb": {"Root": "/dicom-web/", "StudiesMetadata": "MainDicomTags", "Ssl": True},
    }
    path.write_text(json.dumps(document))
    settings = load_settings({"DICOMWEB_CONFIG": str(path), "DATA_DIR": "/tmp/x"})
    assert settings.root == "/dicom-web"
    assert settings.studies_metadata == "MainDicomTags"
    assert settings.ssl is True
    assert settings.overwrite_instances is True
    assert settings.data_dir == Path("/tmp/x")


def test_load_settings_aws_defaults_stow_limit() -> None:
    env = {"BACKEND": "aws", "BUCKET": "b", "TABLE": "t"}
    assert load_settings(env).max_stow_body == 4_000_000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BACKEND": "cloud"}, "BACKEND must be one of local, aws"),
        ({"DICOMWEB_CONFIG": '{"DicomWeb": {"SeriesMetadata": "Fast"}}'}, "Full, MainDicomTags"),
        ({"DICOMWEB_CONFIG": '{"DicomWeb": {"Sssl": true}}'}, "Unknown option DicomWeb.Sssl"),
        ({"DICOMWEB_CONFIG": '{"DicomWeb": {"Ssl": "maybe"}}'}, "true or false"),
        ({"DICOMWEB_CONFIG": '{"DicomWeb": {"MaxStowBody": "big"}}'}, "must be an integer"),
        # Issue 11: true was taken as 1, negative limits were taken, bad JSON raised raw.
        (
            {"DICOMWEB_CONFIG": '{"DicomWeb": {"QidoDefaultLimit": true}}'},
            r"DicomWeb.QidoDefaultLimit must be an integer, not True",
        ),
        (
            {"DICOMWEB_CONFIG": '{"DicomWeb": {"QidoDefaultLimit": -3}}'},
            "DicomWeb.QidoDefaultLimit must be 1 or more, not -3",
        ),
        (
            {"DICOMWEB_CONFIG": '{"DicomWeb": {"InlineLimit": -1}}'},
            "DicomWeb.InlineLimit must be 0 or more, not -1",
        ),
        (
            {"DICOMWEB_CONFIG": '{"DicomWeb": {"MaxFrames": 2.5}}'},
            "DicomWeb.MaxFrames must be an integer, not 2.5",
        ),
        (
            {"DICOMWEB_CONFIG": '{"DicomWeb": {"QidoDefaultLimit": 500, "QidoMaxLimit": 100}}'},
            "QidoDefaultLimit 500 must not exceed DicomWeb.QidoMaxLimit 100",
        ),
        (
            {"DICOMWEB_CONFIG": '{"DicomWeb": {"Root": ["/a"]}}'},
            r"DicomWeb.Root must be a string, not \['/a'\]",
        ),
        (
            {"DICOMWEB_CONFIG": '{"DicomWeb": {"CorsAllowedOrigins": [1]}}'},
            "CorsAllowedOrigins must be a list of strings",
        ),
        ({"DICOMWEB_CONFIG": '{"DicomWeb": {"Ssl": true,}}'}, "not valid JSON: .* line 1"),
        ({"DICOMWEB_CONFIG": '{"DicomWeb": []}'}, "DicomWeb must be an object"),
        ({"DICOMWEB_CONFIG": "/no/such/config.json"}, "config.json cannot be read"),
        ({"DICOMWEB_CONFIG": '{"HttpTimeout": "-5"}'}, "HttpTimeout must be an integer"),
        (
            {"DICOMWEB_CONFIG": '{"DicomWeb": {"JobsStepsPerExecution": 0}}'},
            "DicomWeb.JobsStepsPerExecution must be 1 or more, not 0",
        ),
        (
            {"DICOMWEB_CONFIG": '{"DicomWeb": {"JobsStepsPerExecution": 3000}}'},
            "DicomWeb.JobsStepsPerExecution must be 1 to 2500 .* not 3000",
        ),
        ({"DICOMWEB_CONFIG": '{"JobsHistorySize": 0}'}, "JobsHistorySize must be 1 or more"),
    ],
)
def test_load_settings_rejects_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


@pytest.mark.parametrize(
    "template", ["viewer?uid={uid}", "/viewer?uid=", "javascript:alert({uid})"]
)
def test_load_settings_viewer_template_rejected(template: str) -> None:
    config = json.dumps({"DicomWeb": {"ViewerUrlTemplate": template}})
    with pytest.raises(ConfigError, match="ViewerUrlTemplate"):
        load_settings({"DICOMWEB_CONFIG": config})


def test_load_settings_jobs_history_size_at_the_top_level_as_orthanc() -> None:
    assert load_settings({}).jobs_history_size == 10
    assert load_settings({"DICOMWEB_CONFIG": '{"JobsHistorySize": 50}'}).jobs_history_size == 50


def test_load_settings_viewer_template() -> None:
    config = '{"DicomWeb": {"ViewerUrlTemplate": "/ohif/viewer?StudyInstanceUIDs={uid}"}}'
    settings = load_settings({"DICOMWEB_CONFIG": config})
    assert settings.viewer_url_template == "/ohif/viewer?StudyInstanceUIDs={uid}"


def test_build_context_aws_needs_bucket_and_table() -> None:
    settings = load_settings({"BACKEND": "aws"})  # reading them is fine: packaging does it
    with pytest.raises(ConfigError, match="needs BUCKET and TABLE"):
        build_context(settings)
