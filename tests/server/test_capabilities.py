"""Retrieve Capabilities (PS3.18 §8.9, Annex H) and OPTIONS on resources."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from chalice.test import Client

from chalicelib.context import Context
from chalicelib.server.api import create_app
from chalicelib.server.capabilities import WADL_MEDIA_TYPE, capabilities_description
from tests.conftest import make_context

NS = {"wadl": "http://wadl.dev.java.net/2009/02"}


def _wadl(client: Client) -> ET.Element:
    response = client.http.request("OPTIONS", "/dicom-web", headers={"Host": "pacs.test"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == WADL_MEDIA_TYPE
    return ET.fromstring(response.body)


def _methods(root: ET.Element, base_suffix: str = "/dicom-web/") -> dict[str, set[str]]:
    for resources in root.findall("wadl:resources", NS):
        if resources.get("base", "").endswith(base_suffix):
            return {
                resource.get("path", ""): {
                    m.get("name", "") for m in resource.findall("wadl:method", NS)
                }
                for resource in resources.findall("wadl:resource", NS)
            }
    raise AssertionError(f"no resources with base ending {base_suffix}")


def test_capabilities_describe_served_routes(context: Context) -> None:
    root = _wadl(Client(create_app(lambda: context)))
    methods = _methods(root)
    assert methods["studies/{study}/series/{series}/instances/{instance}/rendered"] == {"GET"}
    assert "DELETE" in methods["studies/{study}"]
    assert "GET" in methods["studies/{study}"]
    assert "POST" in methods["studies"]
    assert methods["studies/{study}/thumbnail"] == {"GET"}
    wado = _methods(root, "/wado/")
    assert wado[""] == {"GET"}
    base = root.find("wadl:resources", NS)
    assert base is not None and base.get("base") == "http://pacs.test/dicom-web/"
    docs = ET.tostring(root, encoding="unicode")
    assert "Extension: PS3.18 defines no delete transaction" in docs
    rendered = root.find(
        "wadl:resources/wadl:resource[@path='studies/{study}/rendered']/wadl:method", NS
    )
    assert rendered is not None
    params = {p.get("name") for p in rendered.findall("wadl:request/wadl:param", NS)}
    assert {"window", "viewport", "quality"} <= params
    for path in ("studies/{study}", "studies/{study}/metadata", "studies"):
        method = root.find(
            f"wadl:resources/wadl:resource[@path='{path}']/wadl:method[@name='GET']", NS
        )
        assert method is not None
        names = {p.get("name") for p in method.findall("wadl:request/wadl:param", NS)}
        assert "accept" in names, path
    media = {r.get("mediaType") for r in rendered.findall("wadl:response/wadl:representation", NS)}
    assert media == {"image/jpeg", "image/png", "image/gif"}


def test_capabilities_follow_settings(backend: str, tmp_path: Path) -> None:
    context = make_context(backend, tmp_path, enable_delete=False, enable_wado=False)
    root = _wadl(Client(create_app(lambda: context)))
    methods = _methods(root)
    assert "DELETE" not in methods["studies/{study}"]
    assert len(root.findall("wadl:resources", NS)) == 1


def test_capabilities_document_built_once(context: Context) -> None:
    client = Client(create_app(lambda: context))
    first = ET.tostring(_wadl(client))
    before = capabilities_description.cache_info()
    assert ET.tostring(_wadl(client)) == first
    after = capabilities_description.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)


def test_options_on_resource_answers_allow(context: Context) -> None:
    client = Client(create_app(lambda: context))
    response = client.http.request("OPTIONS", "/dicom-web/studies/1.2.3/series/1.2.4/rendered")
    assert response.status_code == 204
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    response = client.http.request("OPTIONS", "/dicom-web/studies/1.2.3")
    assert response.headers["Allow"] == "GET, HEAD, POST, DELETE, OPTIONS"


def test_get_on_base_uri_is_405(context: Context) -> None:
    client = Client(create_app(lambda: context))
    response = client.http.get("/dicom-web", headers={"Accept": "*/*"})
    assert response.status_code == 405
    assert "OPTIONS" in response.headers["Allow"]
