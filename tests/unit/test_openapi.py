"""The committed OpenAPI document is the one the code serves (regenerate: make openapi)."""

from __future__ import annotations

import json
from pathlib import Path

from mailintake_config_api.app import create_app

COMMITTED = Path(__file__).resolve().parents[2] / "services/config-api/openapi.json"


def test_committed_openapi_matches_the_code() -> None:
    assert json.loads(COMMITTED.read_text()) == create_app().openapi()


def test_every_error_answer_is_documented_with_the_error_body() -> None:
    document = create_app().openapi()
    for path, methods in document["paths"].items():
        if not path.startswith("/connections"):
            continue
        for method, operation in methods.items():
            for code in ("401", "403", "422"):
                ref = operation["responses"][code]["content"]["application/json"]["schema"]
                assert ref["$ref"].endswith("/ErrorBody"), (path, method, code)
