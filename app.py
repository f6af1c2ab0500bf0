"""Chalice entry point: the DICOMweb server (see chalicelib/server/api.py)."""

from chalicelib.server.api import create_app

app = create_app()
