"""``/healthz`` (liveness), ``/readyz`` (the database answers), ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailintake_config_api.deps import ResourcesDep
from mailintake_shared.http import evaluate

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers")
def readyz(res: ResourcesDep, response: Response) -> dict[str, object]:
    ok, checks = evaluate(res.readiness)
    response.status_code = 200 if ok else 503
    return {"status": "ok" if ok else "fail", "checks": checks}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
