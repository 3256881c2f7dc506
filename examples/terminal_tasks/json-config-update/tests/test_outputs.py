"""Checks for json-config-update (run with the task's working directory as cwd)."""

import json
from pathlib import Path


def load():
    return json.loads(Path("config.json").read_text())


def test_debug_is_off():
    assert load()["debug"] is False


def test_port_added():
    port = load()["port"]
    assert port == 8080
    assert isinstance(port, int)


def test_pool_size_raised():
    assert load()["database"]["pool_size"] == 10


def test_other_keys_kept():
    config = load()
    assert config["name"] == "inventory-service"
    assert config["database"]["host"] == "db.internal"
    assert config["features"] == ["search", "export"]
    assert set(config) == {"name", "debug", "database", "features", "port"}
