"""ConfigStore contract: the same behaviour from SQLite and from DynamoDB."""

from __future__ import annotations

import pytest

from chalicelib.storage.ports import ConfigStore, NotFound

SERVER = {"Url": "http://peer:8042/dicom-web/", "Username": "alice", "HasDelete": True}


def test_put_item_then_get_item(config_store: ConfigStore) -> None:
    config_store.put_item("servers", "peer", SERVER)
    assert config_store.get_item("servers", "peer") == SERVER


def test_put_item_replaces_value(config_store: ConfigStore) -> None:
    config_store.put_item("servers", "peer", SERVER)
    config_store.put_item("servers", "peer", {"Url": "http://other/"})
    assert config_store.get_item("servers", "peer") == {"Url": "http://other/"}


def test_get_item_missing_raises_not_found(config_store: ConfigStore) -> None:
    with pytest.raises(NotFound):
        config_store.get_item("servers", "peer")


def test_list_items_of_namespace_only(config_store: ConfigStore) -> None:
    config_store.put_item("servers", "b", {"Url": "http://b/"})
    config_store.put_item("servers", "a", {"Url": "http://a/"})
    config_store.put_item("settings", "a", {"StudiesMetadata": "Full"})
    assert config_store.list_items("servers") == {
        "a": {"Url": "http://a/"},
        "b": {"Url": "http://b/"},
    }
    assert config_store.list_items("unknown") == {}


def test_delete_item_removes_it(config_store: ConfigStore) -> None:
    config_store.put_item("servers", "peer", SERVER)
    config_store.delete_item("servers", "peer")
    assert config_store.list_items("servers") == {}
    with pytest.raises(NotFound):
        config_store.get_item("servers", "peer")


def test_delete_item_missing_raises_not_found(config_store: ConfigStore) -> None:
    with pytest.raises(NotFound):
        config_store.delete_item("servers", "peer")
