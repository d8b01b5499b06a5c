"""The event contracts under docs/, made from the models (``make contracts``).

python scripts/contracts.py            list what is stale (exit 1 if anything is)
python scripts/contracts.py --write    rewrite docs/schemas/*.json, docs/asyncapi.json and the
                                       generated tables of docs/topics.md

The tables of docs/topics.md sit between ``<!-- contracts:NAME:begin -->`` and
``<!-- contracts:NAME:end -->`` markers; the prose around them is written by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mailintake_shared.cloudevents import KINDS, TOMBSTONE, EventKind
from mailintake_shared.contracts.asyncapi import asyncapi_document
from mailintake_shared.contracts.schemas import schema_files
from mailintake_shared.topics import TOPIC_SPECS

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCHEMAS = DOCS / "schemas"
ASYNCAPI = DOCS / "asyncapi.json"
TOPICS = DOCS / "topics.md"

_FORMATS = {"date-time": "UTC time", "uuid": "UUID", "date": "date `YYYY-MM-DD`"}


def dumps(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- the tables ------------------------------------------------------------------------------
def topics_table() -> str:
    lines = [
        "| topic | key | events (`ce_type`) | producer | consumers | cleanup |",
        "|---|---|---|---|---|---|",
    ]
    for spec in TOPIC_SPECS:
        kinds = [k for k in KINDS if k.topic is spec.topic]
        if not kinds:
            continue
        key = "as the original record" if kinds[0].name == "deadletter" else "connection id"
        producers = dict.fromkeys(p for k in kinds for p in k.producers)
        consumers = dict.fromkeys(c for k in kinds for c in k.consumers)
        days = spec.retention_ms // 86_400_000 if spec.retention_ms else 0
        retention = f", {days} day{'s' if days > 1 else ''}" if days else ""
        cleanup = "**compact**" if spec.compacted else f"delete{retention}"
        lines.append(
            f"| `{spec.topic.value}` | {key} | {'<br>'.join(f'`{k.ce_type}`' for k in kinds)} "
            f"| {', '.join(producers)} | {', '.join(consumers)} | {cleanup} |"
        )
    return "\n".join(lines) + "\n"


def headers_table() -> str:
    lines = [
        "| `ce_type` | `ce_source` service | `ce_id` | `ce_time` | `content-type` |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        time = f"`{kind.time_field}`" if kind.time_field else "when it was published"
        if kind is TOMBSTONE:
            time = "when the connection was deleted"
        content = f"`{kind.content_type}`" if kind.content_type else "(none: no data)"
        lines.append(
            f"| `{kind.ce_type}` | {', '.join(kind.producers)} | {kind.id_rule} | {time} "
            f"| {content} |"
        )
    return "\n".join(lines) + "\n"


def fields_table(kind: EventKind) -> str:
    schema = schema_files()[f"{kind.ce_type}.json"]
    lines = ["| field | type | null | description |", "|---|---|---|---|"]
    lines += _rows(schema, schema.get("$defs", {}), "")
    return "\n".join(lines) + "\n"


def _rows(schema: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    rows = []
    for name, prop in schema["properties"].items():
        nullable, inner = _nullable(prop)
        target = defs[inner["$ref"].rsplit("/", 1)[1]] if "$ref" in inner else inner
        described = prop.get("description") or target.get("description") or ""
        text = " ".join(described.split()).replace("|", "\\|")
        if target.get("type") == "object" and "properties" in target:
            rows.append(f"| `{path}{name}` | object | {'yes' if nullable else 'no'} | {text} |")
            rows += _rows(target, defs, f"{path}{name}.")
            continue
        type_ = _type(target).replace("|", "\\|")
        rows.append(f"| `{path}{name}` | {type_} | {'yes' if nullable else 'no'} | {text} |")
    return rows


def _nullable(prop: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    options = prop.get("anyOf")
    if options and {"type": "null"} in options:
        others = [o for o in options if o != {"type": "null"}]
        return True, others[0]
    return False, prop


def _type(schema: dict[str, Any]) -> str:
    if "const" in schema:
        return f"{schema.get('type', 'value')}, always `{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return "string: " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return "array of " + _type(schema.get("items", {}))
    if kind == "object":
        return "object of " + _type(schema.get("additionalProperties", {}))
    if "format" in schema:
        return f"{kind} ({_FORMATS.get(schema['format'], schema['format'])})"
    return str(kind)


def blocks() -> dict[str, str]:
    """Every generated block of docs/topics.md, by name."""
    found = {"topics": topics_table(), "headers": headers_table()}
    for kind in KINDS:
        if kind.model is not None:
            found[f"fields:{kind.ce_type}"] = fields_table(kind)
    return found


# --- reading and writing ---------------------------------------------------------------------
def markers(name: str) -> tuple[str, str]:
    return f"<!-- contracts:{name}:begin -->", f"<!-- contracts:{name}:end -->"


def committed_block(text: str, name: str) -> str | None:
    begin, end = markers(name)
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n") + "\n"


def with_blocks(text: str) -> str:
    for name, body in blocks().items():
        begin, end = markers(name)
        if begin not in text:
            raise SystemExit(f"docs/topics.md has no {begin} ... {end}: add them where it goes")
        head, rest = text.split(begin, 1)
        text = f"{head}{begin}\n{body}{end}{rest.split(end, 1)[1]}"
    return text


def expected_files() -> dict[Path, str]:
    files = {SCHEMAS / name: dumps(schema) for name, schema in schema_files().items()}
    files[ASYNCAPI] = dumps(asyncapi_document())
    return files


def stale() -> list[str]:
    """What differs from the code: file names and table names."""
    found = [
        str(path.relative_to(DOCS.parent))
        for path, text in expected_files().items()
        if not path.exists() or path.read_text() != text
    ]
    extra = set(SCHEMAS.glob("*.json")) - set(expected_files())
    found += [f"{path.relative_to(DOCS.parent)} (no such event)" for path in sorted(extra)]
    topics = TOPICS.read_text()
    found += [
        f"docs/topics.md: {name}"
        for name, body in blocks().items()
        if committed_block(topics, name) != body
    ]
    return found


def write() -> None:
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    expected = expected_files()
    for path in set(SCHEMAS.glob("*.json")) - set(expected):
        path.unlink()
    for path, text in expected.items():
        path.write_text(text)
    TOPICS.write_text(with_blocks(TOPICS.read_text()))


def main() -> None:
    if "--write" in sys.argv:
        write()
        return
    differences = stale()
    for difference in differences:
        print(f"stale: {difference}")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
