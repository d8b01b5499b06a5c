"""The config API fuzzed from its own OpenAPI document (schemathesis): for generated valid and
invalid requests to every operation, no 5xx, every status code documented, and every answer,
4xx included, in its documented shape (``ErrorBody`` for errors). The same requests again with
NUL and control characters in every string (body, query, path), on PostgreSQL and SQLite:
never a 5xx.

``POST /connections/test`` is left out: it resolves and connects to the host it is given, and
generated host names would go to the network. The operations on a saved connection answer
404 here before any network step (the connection ids are generated).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks
from sqlalchemy import create_engine

from mailintake_shared.db.migrate import upgrade
from tests.api import ADMIN, api_client
from tests.conftest import make_settings

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


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def client(
    request: pytest.FixtureRequest,
    broker: Any,
    postgres: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    """One app per database for every generated case (what the cases create stays, as on a
    server in use): an app, a database and topics per case cost more than the cases."""
    if request.param == "sqlite":
        database = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
        engine = create_engine(database)
        upgrade(engine)
        engine.dispose()
    else:
        database = str(postgres.url(postgres.create_database(template=postgres.template)))
    fuzzed = make_settings(broker, database).model_copy(
        update={"api_auth_failures_per_minute": 1_000_000}
    )
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


# NUL (PostgreSQL has none in text), CR LF (ends an IMAP or POP3 command line), ESC and a C1
# control: each put inside every string a request carries.
HOSTILE = ("\x00", "\r\n", "\x1b[0m\x85")


def _poisoned(value: Any, hostile: str) -> Any:
    if isinstance(value, str):
        return value[:1] + hostile + value[1:]
    if isinstance(value, list):
        return [_poisoned(item, hostile) for item in value]
    if isinstance(value, dict):
        return {key: _poisoned(item, hostile) for key, item in value.items()}
    return value


@schema.parametrize()
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_nul_and_control_characters_never_give_a_5xx(
    client: TestClient, case: schemathesis.Case[Any]
) -> None:
    path_parameters = case.path_parameters
    for hostile in HOSTILE:
        if path_parameters:  # percent-encoded, as a client sends them
            poisoned = _poisoned({k: str(v) for k, v in path_parameters.items()}, hostile)
            case.path_parameters = {k: quote(v, safe="") for k, v in poisoned.items()}
        request = case.as_transport_kwargs(base_url="http://testserver", headers=ADMIN)
        request.pop("cookies", None)
        for part in ("json", "params"):
            if part in request:
                request[part] = _poisoned(request[part], hostile)
        response = client.request(**request)
        assert response.status_code < 500, (case.method, case.path, hostile, response.text)
