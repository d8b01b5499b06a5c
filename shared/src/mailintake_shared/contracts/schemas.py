"""JSON Schemas (draft 2020-12) of the events as they are on the wire.

``Event.to_bytes`` writes every field, null or not, so every property is required; times are
UTC with ``Z`` and fractional seconds, up to microseconds, only when not zero. Readers are
expected to ignore fields they do not know (a version may gain fields), so the schemas do not
forbid extra properties.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from mailintake_shared.cloudevents import KINDS, EventKind

DIALECT = "https://json-schema.org/draft/2020-12/schema"
UTC_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"


class WireSchema(GenerateJsonSchema):
    """pydantic's serialization schema, stating what the wire always has."""

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        return True  # nothing is left out when an event is written, defaults included

    def datetime_schema(self, schema: core_schema.DatetimeSchema) -> JsonSchemaValue:
        return {**super().datetime_schema(schema), "pattern": UTC_TIME}

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        found = super().model_schema(schema)
        found.pop("additionalProperties", None)  # readers ignore fields added later
        return found


def event_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The standalone schema of one event model (its nested models under ``$defs``)."""
    found = model.model_json_schema(
        by_alias=True, mode="serialization", schema_generator=WireSchema
    )
    return {"$schema": DIALECT, **found}


def modelled_kinds() -> list[EventKind]:
    return [kind for kind in KINDS if kind.model is not None]


def schema_files() -> dict[str, dict[str, Any]]:
    """``{file name: schema}``: one per event kind and version, named by its ``ce_type``."""
    return {
        f"{kind.ce_type}.json": event_schema(kind.model)
        for kind in modelled_kinds()
        if kind.model is not None
    }


def shared_definitions(ref_template: str) -> dict[str, Any]:
    """Every event model and the models they use, by name, referring to each other with
    ``ref_template`` (``#/components/schemas/{model}`` in the AsyncAPI document)."""
    models = [(kind.model, "serialization") for kind in modelled_kinds() if kind.model]
    _, top = models_json_schema(
        models,  # type: ignore[arg-type]
        by_alias=True,
        ref_template=ref_template,
        schema_generator=WireSchema,
    )
    definitions: dict[str, Any] = top["$defs"]
    return definitions
