"""The config API fuzzed from its own OpenAPI document (schemathesis): for generated valid and
invalid requests to every operation, no 5xx, every status code documented, and every answer,
4xx included, in its documented shape (``ErrorBody`` for errors).

``POST /connections/test`` is left out: it resolves and connects to the host it is given, and
generated host names would go to the network. The operations on a saved connection answer
404 here before any network step (the connection ids are generated).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

from mailintake_shared.settings import Settings
from tests.api import ADMIN, api_client

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


# The committed document (tests/unit/test_openapi.py keeps it equal to the code's).
OPENAPI = json.loads((ROOT / "services/config-api/openapi.json").read_text())
schema = schemathesis.openapi.from_dict(OPENAPI).exclude(method="POST", path="/connections/test")


# The checks on the answer alone: the others send further requests of their own, which would
# leave the in-process app for the network.
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.missing_required_header,
    openapi_checks.unsupported_method,
]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    fuzzed = settings.model_copy(update={"api_auth_failures_per_minute": 1_000_000})
    with api_client(fuzzed) as running:  # the app started: database, relay
        del running.headers["Authorization"]  # per request: the cases without it must fail
        yield running


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_keeps_its_documented_contract(
    client: TestClient, case: schemathesis.Case[Any]
) -> None:
    request = case.as_transport_kwargs(base_url="http://testserver", headers=ADMIN)
    request.pop("cookies", None)  # none are used; httpx wants them on the client
    response = client.request(**request)
    case.validate_response(response, checks=CHECKS, headers=ADMIN)
