"""Pulumi.yaml: generated from the settings model, current, and declaring every key the stacks use."""

import pytest
import yaml

from components.project_file import render_project_file
from components.rendering import REPOSITORY_ROOT
from components.settings import PROJECT, SECRET_KEYS, StackSettings

PROJECT_FILE = REPOSITORY_ROOT / "Pulumi.yaml"
STACK_FILES = sorted(REPOSITORY_ROOT.glob("Pulumi.*.yaml"))
# Namespaces of the providers the program uses, whose own keys (such as kubernetes:context) a stack may set.
PROVIDER_NAMESPACES = {"docker", "kubernetes", "random", "grafana"}


@pytest.fixture(scope="module")
def declarations() -> dict:
    config = yaml.safe_load(PROJECT_FILE.read_text())["config"]
    assert config
    return config


def settings_keys() -> list[str]:
    keys = [field.alias for name, field in StackSettings.model_fields.items() if name != "secrets_set" and field.alias]
    assert keys
    return keys


def test_project_file_current():
    # Regenerate with: python -m components.project_file
    assert PROJECT_FILE.read_text() == render_project_file()


def test_project_name():
    assert yaml.safe_load(PROJECT_FILE.read_text())["name"] == PROJECT


def test_settings_keys_declared(declarations):
    for key in settings_keys():
        assert key in declarations, key
        assert declarations[key].get("description"), f"{key} has no description"


def test_secret_keys_declared(declarations):
    assert SECRET_KEYS

    for key in SECRET_KEYS:
        assert key in declarations, key
        assert declarations[key].get("description"), f"{key} has no description"


def test_required_secret_declared_secret(declarations):
    for key, required in SECRET_KEYS.items():
        if required:
            assert declarations[key].get("secret") is True, key
            assert "default" not in declarations[key], key
        else:
            # Optional secrets default to empty, which the program reads as unset.
            assert declarations[key]["default"] == "", key


def test_no_undeclared_settings_in_project_file(declarations):
    assert set(declarations) == set(settings_keys()) | set(SECRET_KEYS)


def test_stack_files_exist():
    names = {path.name for path in STACK_FILES}

    assert {"Pulumi.dev.yaml", "Pulumi.prod.yaml"} <= names


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda path: path.name)
def test_stack_file_keys_declared(declarations, path):
    config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    assert config

    for key in config:
        namespace, _, name = key.partition(":")
        if namespace == PROJECT:
            assert name in declarations, f"{path.name}: {key} is not declared in Pulumi.yaml"
        else:
            assert namespace in PROVIDER_NAMESPACES, f"{path.name}: {key} belongs to no project or provider"


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda path: path.name)
def test_stack_file_secrets_encrypted(path):
    config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}

    for key in SECRET_KEYS:
        value = config.get(f"{PROJECT}:{key}")
        assert value is None or (isinstance(value, dict) and "secure" in value), f"{path.name}: {key} is plain text"


def test_port_keys_integer(declarations):
    ports = [key for key in settings_keys() if key.endswith("Port")]
    assert ports

    for key in ports:
        assert declarations[key]["type"] == "integer", key


def test_list_keys_array(declarations):
    assert declarations["apiTargets"]["type"] == "array"
    assert declarations["apiTargets"]["items"] == {"type": "string"}
