"""Helpers shared by the services' render functions."""

from pathlib import Path
from typing import Any

import yaml

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


class _IndentedDumper(yaml.SafeDumper):
    """A dumper that indents list items under their key, as Prometheus' own examples do."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_multiline(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_IndentedDumper.add_representer(str, _represent_multiline)


def to_yaml(data: Any) -> str:
    """Dump data as block-style YAML, keeping key order and writing multi-line strings as blocks."""
    return yaml.dump(data, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False, width=120)
