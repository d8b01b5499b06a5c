"""The committed contracts as a downstream team reads them: docs/schemas/, docs/asyncapi.json
and docs/topics.md. Nothing here imports the product's models."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

DOCS = Path(__file__).resolve().parents[2] / "docs"
ASYNCAPI = json.loads((DOCS / "asyncapi.json").read_text())
TOPICS_MD = (DOCS / "topics.md").read_text()


def schema(ce_type: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((DOCS / "schemas" / f"{ce_type}.json").read_text())
    return found


def strict(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every object that lists its properties closed to others: a field
    the contract does not name fails validation."""
    closed = copy.deepcopy(document)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(closed)
    return closed


def validator(ce_type: str) -> Draft202012Validator:
    """A strict validator of the value of ``ce_type`` (formats checked)."""
    return Draft202012Validator(strict(schema(ce_type)), format_checker=FormatChecker())


def documented_fields(ce_type: str) -> set[str]:
    """The field paths the table of ``ce_type`` in docs/topics.md lists (``headers.from``)."""
    begin, end = (
        f"<!-- contracts:fields:{ce_type}:begin -->",
        f"<!-- contracts:fields:{ce_type}:end -->",
    )
    table = TOPICS_MD.split(begin, 1)[1].split(end, 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE))


def field_paths(value: dict[str, Any], node: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """Every field path of a JSON value, read along its schema ``node`` (objects with named
    properties are entered; free maps and lists are not)."""
    paths = set()
    for name, item in value.items():
        paths.add(name)
        prop = node.get("properties", {}).get(name, {})
        options = [prop, *prop.get("anyOf", [])]
        target = next(
            (
                defs[o["$ref"].rsplit("/", 1)[1]] if "$ref" in o else o
                for o in options
                if "$ref" in o or "properties" in o
            ),
            None,
        )
        if isinstance(item, dict) and target is not None and "properties" in target:
            paths |= {f"{name}.{sub}" for sub in field_paths(item, target, defs)}
    return paths


def examples() -> dict[str, Any]:
    """The JSON examples of docs/topics.md, by the ``ce_type`` their fence names."""
    found: dict[str, Any] = {}
    for ce_type, body in re.findall(r"^```json (\S+)\n(.*?)^```", TOPICS_MD, re.S | re.M):
        assert ce_type not in found, f"two examples of {ce_type}"
        found[ce_type] = json.loads(body)
    return found
