"""The committed contracts are the code's (regenerate: make contracts), valid, and what the
docs show matches them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft7Validator, ValidationError
from scripts.contracts import stale

from mailintake_shared.cloudevents import KINDS
from mailintake_shared.topics import Topic
from tests.harness.contracts import (
    ASYNCAPI,
    documented_fields,
    examples,
    field_paths,
    schema,
    validator,
)

META = Path(__file__).resolve().parents[1] / "data/asyncapi/asyncapi-3.0.0.schema.json"
MODELLED = [kind.ce_type for kind in KINDS if kind.model is not None]


def test_committed_schemas_asyncapi_and_tables_are_those_of_the_models() -> None:
    assert stale() == [], "regenerate them: make contracts"


def test_the_asyncapi_document_is_valid_asyncapi_3_and_lists_every_event() -> None:
    Draft7Validator(json.loads(META.read_text())).validate(ASYNCAPI)
    channels = ASYNCAPI["channels"]
    for kind in KINDS:
        channel = channels[kind.topic.value]
        assert channel["address"] == "{prefix}" + kind.topic.value
        assert kind.ce_type in channel["messages"]
        message = ASYNCAPI["components"]["messages"][kind.ce_type]
        headers = message["headers"]["properties"]
        assert headers["ce_type"]["const"] == kind.ce_type
        assert set(kind.producers) == {
            op["tags"][0]["name"]
            for op in ASYNCAPI["operations"].values()
            if op["action"] == "send" and op["messages"][0]["$ref"].endswith("/" + kind.ce_type)
        }
    assert set(channels) == {topic.value for topic in Topic}


def test_every_event_has_an_example_in_the_docs_that_matches_its_schema() -> None:
    found = examples()
    assert sorted(found) == sorted(MODELLED)
    for ce_type, value in found.items():
        validator(ce_type).validate(value)
        document = schema(ce_type)
        assert field_paths(value, document, document.get("$defs", {})) <= documented_fields(ce_type)


def test_a_field_the_contract_lacks_or_a_time_with_an_offset_fails_validation() -> None:
    stored = examples()["mailintake.mail.stored.v1"]
    check = validator("mailintake.mail.stored.v1")
    with pytest.raises(ValidationError, match="Additional properties"):
        check.validate({**stored, "priority": "high"})
    with pytest.raises(ValidationError, match="Additional properties"):
        check.validate({**stored, "headers": {**stored["headers"], "x_mailer": "x"}})
    with pytest.raises(ValidationError, match="is not valid under any"):
        check.validate({**stored, "internal_date": "2026-11-24T07:16:00+00:00"})
    without = {k: v for k, v in stored.items() if k != "internal_date"}
    with pytest.raises(ValidationError, match="required"):
        check.validate(without)
    # the published schema itself lets readers meet fields added later
    Draft7Validator(schema("mailintake.mail.stored.v1")).validate({**stored, "priority": "high"})
