"""The CDK app: `python -m infra.app` synthesizes the stack of one stage into build/cdk.out.

The stage (`infra/stages.py`) comes from the CDK context (`-c stage=aws`) or `STAGE`, `dev` by
default. No AWS account is needed to synthesize: the template is environment-agnostic.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aws_cdk as cdk

from infra.packaging import ROOT
from infra.stack import DicomWebStack

BUILD = ROOT / "build"
CDK_OUT = BUILD / "cdk.out"


def main() -> None:
    # chalice.cdk writes its packages under the working directory: keep them in build/.
    outdir = Path(os.environ.get("CDK_OUTDIR", CDK_OUT))
    for stale in (BUILD / "chalice.out", outdir):  # earlier packages and assets, 50 MB each
        shutil.rmtree(stale, ignore_errors=True)
    BUILD.mkdir(exist_ok=True)
    os.chdir(BUILD)
    app = cdk.App(outdir=str(outdir))
    stage = app.node.try_get_context("stage") or os.environ.get("STAGE", "dev")
    DicomWebStack(app, stage)
    app.synth()


if __name__ == "__main__":
    main()
