"""Every error answers with ``ErrorBody``: a sentence, and for invalid input the field and rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailintake_config_api.schemas import ErrorBody, FieldError

NOT_SAVED = (
    "the change was not saved: the database refused to commit it (see the config API's log); "
    "nothing of this request is stored, so it is safe to repeat"
)


class CommitFailedError(Exception):
    """The database refused to commit the request's transaction: nothing of it was saved."""


class InvalidInputError(Exception):
    """Input that breaks a rule joining several fields; answered with 422."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.rule}" for e in errors))
        self.errors = errors


def _rule(error: dict[str, object], connection_id: str = "{id}") -> str:
    kind = error.get("type")
    message = str(error.get("msg", "invalid value"))
    if kind == "extra_forbidden" and _field(error) == "enabled":
        return (
            f"unknown field: enable with POST /connections/{connection_id}/enable (it "
            f"estimates the first poll), disable with POST /connections/{connection_id}/disable"
        )
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "this field is required"
    return message.removeprefix("Value error, ")


def _field(error: dict[str, object]) -> str:
    location = [str(part) for part in error.get("loc", ())]  # type: ignore[attr-defined]
    if location and location[0] in ("body", "query", "path"):
        location = location[1:]
    return ".".join(location) or "body"


def field_errors(errors: Sequence[Any], connection_id: str = "{id}") -> list[FieldError]:
    """Pydantic's (or FastAPI's) error dicts as fields and rules in words."""
    return [FieldError(field=_field(e), rule=_rule(e, connection_id)) for e in errors]


def invalid_response(errors: list[FieldError]) -> JSONResponse:
    body = ErrorBody(detail="invalid input", errors=errors)
    return JSONResponse(status_code=422, content=body.model_dump())


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        connection_id = str(request.path_params.get("connection_id", "{id}"))
        return invalid_response(field_errors(exc.errors(), connection_id))

    @app.exception_handler(InvalidInputError)
    async def _invalid(_request: Request, exc: InvalidInputError) -> JSONResponse:
        return invalid_response(exc.errors)

    @app.exception_handler(CommitFailedError)
    async def _not_saved(_request: Request, _exc: CommitFailedError) -> JSONResponse:
        body = ErrorBody(detail=NOT_SAVED)
        return JSONResponse(status_code=503, content=body.model_dump())

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorBody(detail=str(exc.detail))
        return JSONResponse(
            status_code=exc.status_code, content=body.model_dump(), headers=exc.headers
        )
