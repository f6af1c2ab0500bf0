"""A Lambda cold start: `import app` in a fresh process loads none of the heavy modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pydicom", "numpy", "PIL", "pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls")

PROBE = """
import json, sys
import app
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


@pytest.mark.parametrize("backend", ["local", "aws"])
def test_import_app_loads_no_dicom_or_image_module(backend: str, tmp_path: Path) -> None:
    env = {"BACKEND": backend, "DATA_DIR": str(tmp_path), "AWS_REGION": "us-east-1"}
    if backend == "aws":
        env |= {"BUCKET": "bucket", "TABLE": "table"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(json.loads(result.stdout))
    assert "chalicelib" in loaded  # the probe did import the app
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
