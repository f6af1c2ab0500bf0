"""Every route of the route table declares who may call it (read, write or admin)."""

from chalicelib.config import Settings
from chalicelib.server.api import build_route_table
from chalicelib.server.http import SCOPES


def test_route_table_every_method_has_a_scope():
    table = build_route_table(Settings())
    assert table.routes
    for path, handlers in table.routes.items():
        assert set(table.scopes[path]) == set(handlers), path
        for method in handlers:
            assert table.scope(path, method) in SCOPES, (path, method)


def test_route_table_scopes_follow_the_service():
    table = build_route_table(Settings())
    assert table.scope("/dicom-web/studies", "GET") == "read"
    assert table.scope("/dicom-web/studies", "HEAD") == "read"
    assert table.scope("/dicom-web/studies", "POST") == "write"
    assert table.scope("/dicom-web/studies/{study}", "DELETE") == "admin"
