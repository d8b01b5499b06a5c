"""The config API as the command sees it: base URL and token from options or environment,
and one error type carrying what the API said."""

from __future__ import annotations

import uuid
from typing import Any

import httpx


class ApiError(Exception):
    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.body = body


class Api:
    def __init__(self, url: str, token: str | None, timeout_s: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON in, JSON out; an answer outside 2xx raises ``ApiError`` with its detail."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the API at {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            body = _json(response)
            detail = body.get("detail") if isinstance(body, dict) else None
            errors = body.get("errors") if isinstance(body, dict) else None
            if errors:
                detail = f"{detail}: " + "; ".join(e["rule"] for e in errors)
            raise ApiError(response.status_code, str(detail or response.text), body)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def connection_id(self, ref: str) -> str:
        """A connection by id, or by its exact name (case-insensitive)."""
        try:
            return str(uuid.UUID(ref))
        except ValueError:
            pass
        page = self.call("GET", "/connections", params={"q": ref, "limit": 500})
        matches = [c for c in page["items"] if c["name"].lower() == ref.lower()]
        if not matches:
            raise ApiError(404, f"no connection named {ref!r}")
        return str(matches[0]["id"])


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
