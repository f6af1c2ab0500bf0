"""The ports `build_context` wires for each backend."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import make_context


@pytest.mark.usefixtures("aws_env")
def test_build_context_aws_presigns_with_sigv4(tmp_path: Path) -> None:
    context = make_context("aws", tmp_path)
    context.blobs.put("tmp/answer", b"large answer")
    url = context.blobs.presigned_url("tmp/answer", 60)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert "Signature" not in query  # SigV2's parameter
