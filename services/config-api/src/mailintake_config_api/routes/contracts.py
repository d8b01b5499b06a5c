"""``/asyncapi.json``: the AsyncAPI 3.0 document of every topic, served like ``/openapi.json``
(no token: it describes the events, not the data)."""

from __future__ import annotations

import functools
import json

from fastapi import APIRouter, Response

from mailintake_config_api.deps import ResourcesDep
from mailintake_shared.contracts.asyncapi import asyncapi_document

router = APIRouter(tags=["contracts"])


@functools.cache
def _document(prefix: str) -> bytes:
    return json.dumps(asyncapi_document(prefix)).encode()


@router.get(
    "/asyncapi.json",
    summary="The AsyncAPI document of every topic",
    description="Channels are the physical topics, `{prefix}<topic>`, with this deployment's "
    "topic prefix as the parameter's default; each message has its value schema, CloudEvents "
    "headers and key. docs/asyncapi.json is the same document with the default prefix.",
    response_class=Response,
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
def asyncapi(res: ResourcesDep) -> Response:
    return Response(_document(res.settings.topic_prefix), media_type="application/json")
